"""The decorator and the handle it returns.

``@boost(BoosterParams(...))`` (or ``@BoosterParams(...)``) turns a function into a :class:`Booster`.
Calling the booster still runs the function locally; ``push``/``publish`` send tasks; ``consume``
starts consuming in background threads of this process.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional

from funboost.exceptions import PublishArgumentsError
from funboost.keepalive import KeepAlive
from funboost.engine.status import _PID
from funboost.message import build_envelope, dumps
from funboost.params import BoosterParams, TaskOptions, eta_to_timestamp
from funboost.plugins.broker import Broker, OutgoingMessage, QueueSize
from funboost.plugins.manager import get_plugin_manager, has_hook_impls, resolve_broker_kind
from funboost.result import AsyncResult


def _make_logger(params: BoosterParams) -> logging.Logger:
    name = params.logger_name or f"{params.logger_prefix}funboost.{params.queue_name}"
    lg = logging.getLogger(name)
    lg.setLevel(params.log_level)
    from funboost.logs import configure_queue_logger
    configure_queue_logger(lg, params)
    return lg


class Booster:
    """A decorated function: callable as before, plus the task API."""

    def __init__(self, params: BoosterParams, func: Optional[Callable] = None) -> None:
        if not isinstance(params, BoosterParams):
            raise TypeError("boost() takes a BoosterParams instance")
        self.params = params
        self.queue_name = params.queue_name
        self.func: Optional[Callable] = None
        self._brokers: dict[int, Broker] = {}
        self._broker_lock = threading.Lock()
        self._consumer = None
        self._consume_lock = threading.Lock()
        self.broker_cls = resolve_broker_kind(params.broker_kind)
        self.broker_options = self.broker_cls.parse_options(params.broker_exclusive_config)
        self.logger = _make_logger(params)
        if func is not None:
            self._bind(func)

    # ---------------------------------------------------------------- decoration
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.func is None:  # used as  Booster(params)(func)
            if len(args) == 1 and not kwargs and callable(args[0]):
                self._bind(args[0])
                return self
            raise TypeError("Booster is not bound to a function yet")
        from funboost.context import FctContext, _current_task, reset_current_task, set_current_task
        if _current_task.get() is not None:
            return self.func(*args, **kwargs)
        # a plain local call: give fct a context too, so the same code runs both ways
        from funboost.message import uuid7
        token = set_current_task(FctContext(queue_name=self.queue_name, task_id=f"local-{uuid7()}",
                                            function_params=dict(kwargs), full_msg={"extra": {}},
                                            logger=self.logger))
        try:
            return self.func(*args, **kwargs)
        finally:
            reset_current_task(token)

    def _bind(self, func: Callable) -> None:
        raw = func
        if isinstance(func, (staticmethod, classmethod)):
            raw = func.__func__
        self.func = raw
        self.func_name = getattr(raw, "__qualname__", getattr(raw, "__name__", repr(raw)))
        self.is_coroutine = inspect.iscoroutinefunction(raw)
        self.__wrapped__ = raw
        self.__name__ = getattr(raw, "__name__", "task")
        self.__doc__ = getattr(raw, "__doc__", None)
        self.__module__ = getattr(raw, "__module__", __name__)
        self.params.consuming_function = raw
        self.params.consuming_function_raw = raw
        self.params.consuming_function_name = self.func_name
        self._analyse_signature(raw)
        from funboost.methods import detect_function_kind
        self.function_kind = detect_function_kind(func, self.params)
        self._is_method = self.function_kind in ("CLASS_METHOD", "INSTANCE_METHOD")
        BoostersManager.regist_booster(self)
        if self.params.is_auto_start_consuming_message:
            self.consume()

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # decorating a method in a class body: attribute access still gives the booster for
        # push/consume; calling it through an instance passes the instance as before
        if obj is None:
            return self
        return _BoundBoosterCall(self, obj)

    def __repr__(self) -> str:
        return f"<Booster queue={self.queue_name!r} broker={self.params.broker_kind!r} func={self.func_name}>"

    def __getstate__(self) -> dict:  # picklable by queue name (APScheduler job stores, spawn children)
        return {"queue_name": self.queue_name, "module": self.__module__}

    def __setstate__(self, state: dict) -> None:
        b = BoostersManager.get_booster(state["queue_name"], import_module=state.get("module"))
        self.__dict__.update(b.__dict__)

    # ---------------------------------------------------------------- signature
    def _analyse_signature(self, func: Callable) -> None:
        manual = self.params.manual_func_input_params
        if manual.get("is_manual_func_input_params"):
            self._required = list(manual.get("must_arg_name_list", []))
            self._all = self._required + list(manual.get("optional_arg_name_list", []))
            self._var_kw = False
            self._sig = None
            self._positional_fast = True
            self._freeze_signature_sets()
            return
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        self._sig = sig
        # plain (a, b=1) signatures map positional args by position, without inspect's slower bind
        self._positional_fast = all(prm.kind == prm.POSITIONAL_OR_KEYWORD for prm in params)
        self._required, self._all, self._var_kw = [], [], False
        for prm in params:
            if prm.kind == prm.VAR_KEYWORD:
                self._var_kw = True
            elif prm.kind == prm.VAR_POSITIONAL:
                continue
            else:
                self._all.append(prm.name)
                if prm.default is prm.empty:
                    self._required.append(prm.name)
        self._freeze_signature_sets()

    def _freeze_signature_sets(self) -> None:
        self._required_set = frozenset(self._required)
        self._all_set = frozenset(self._all)

    def _check_kwargs(self, kwargs: dict) -> None:
        if not self.params.should_check_publish_func_params:
            return
        keys = kwargs.keys()
        if "extra" not in keys and self._required_set <= keys and (self._var_kw or keys <= self._all_set):
            return  # the common case, decided with two set operations
        if "extra" in keys:
            raise PublishArgumentsError(f"{self.func_name}: 'extra' is a reserved key of the message envelope")
        missing = [n for n in self._required if n not in kwargs]
        unknown = [] if self._var_kw else [k for k in kwargs if k not in self._all]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing required argument(s) {missing}")
            if unknown:
                parts.append(f"unknown argument(s) {unknown}")
            raise PublishArgumentsError(f"cannot publish to {self.queue_name!r}: {self.func_name}() "
                                        f"{' and '.join(parts)}; it takes {self._all}")

    def convert_kwargs_for_call(self, kwargs: dict) -> dict:
        """Consumer side: check the arguments fit and rebuild method receivers."""
        keys = kwargs.keys()
        if not (self._required_set <= keys and (self._var_kw or keys <= self._all_set)):
            missing = [n for n in self._required if n not in kwargs]
            unknown = [] if self._var_kw else [k for k in kwargs if k not in self._all_set]
            raise TypeError(f"missing {missing}, unknown {unknown}; the function takes {self._all}")
        if self.function_kind in ("CLASS_METHOD", "INSTANCE_METHOD"):
            from funboost.methods import rebuild_receiver
            return rebuild_receiver(self, kwargs)
        return kwargs

    def get_callable(self) -> Callable:
        func = self.func
        deco = self.params.consuming_function_decorator
        return deco(func) if deco is not None else func

    # ---------------------------------------------------------------- broker / state
    def new_broker(self) -> Broker:
        return self.broker_cls(self.queue_name, self.broker_options)

    @property
    def broker(self) -> Broker:
        """The publishing broker instance of this process (rebuilt after fork)."""
        b = self._brokers.get(_PID[0])
        if b is None:
            with self._broker_lock:
                pid = os.getpid()
                b = self._brokers.get(pid)
                if b is None:
                    b = self._brokers[pid] = self.new_broker()
        return b

    def state_backend(self):
        from funboost.state.base import get_state_backend
        return get_state_backend(self.params.state_backend)

    def eta_of(self, extra: dict) -> Optional[float]:
        if extra.get("eta") is not None:
            return eta_to_timestamp(extra["eta"])
        if extra.get("countdown") is not None:
            return float(extra.get("publish_time", time.time())) + float(extra["countdown"])
        return None

    # ---------------------------------------------------------------- publishing
    def _build(self, kwargs: dict, task_id: Optional[str], task_options: Optional[TaskOptions]) -> tuple[dict, OutgoingMessage]:
        if not isinstance(kwargs, dict):
            raise PublishArgumentsError(f"publish() takes a dict of the function's arguments, got {type(kwargs).__name__}")
        opts: Optional[dict[str, Any]] = None
        if "extra" in kwargs:  # a caller re-publishing an envelope: keep its extra as options
            kwargs = dict(kwargs)
            given_extra = kwargs.pop("extra") or {}
            opts = {k: v for k, v in given_extra.items() if k not in ("publish_time", "publish_time_format")}
        self._check_kwargs(kwargs)
        if task_options is not None:
            if isinstance(task_options, dict):
                task_options = TaskOptions(**task_options)
            opts = {**(opts or {}), **task_options.to_extra()}
        if opts:
            env = build_envelope(kwargs, task_id=task_id or opts.pop("task_id", None), extra_options=opts)
        else:  # the common case: no options, nothing to merge
            env = build_envelope(kwargs, task_id=task_id)
        extra = env["extra"]
        if self._is_method:
            from funboost.methods import serialize_receiver
            serialize_receiver(self, env)
        if self._hook_before_publish:
            get_plugin_manager().hook.funboost_before_publish(queue_name=self.queue_name, message=env)
        caps = self.broker_cls.capabilities
        eta = prio = key = None
        if opts:
            if caps.native_delay:
                eta = self.eta_of(extra)
            prio = extra.get("priority")
            if prio is not None and not caps.priority:
                self.logger.warning("broker %r has no priorities; the priority of %s is ignored",
                                    self.broker_cls.kind, extra["task_id"])
                prio = None
            key = extra.get("key")
        return env, self._message(env, extra["task_id"], prio, eta, key)

    def _message(self, env: dict, task_id: str, priority: Optional[int] = None, eta: Optional[float] = None,
                 key: Optional[str] = None) -> OutgoingMessage:
        """The envelope as the broker takes it: the dict itself for in-process brokers, else JSON text."""
        if self.broker_cls.accepts_payload:
            return OutgoingMessage("", task_id, priority, eta, key, payload=env)
        try:
            return OutgoingMessage(dumps(env), task_id, priority, eta, key)
        except TypeError as exc:
            raise PublishArgumentsError(f"cannot publish to {self.queue_name!r}: {exc}. Arguments must be "
                                        f"JSON-serializable") from None

    @property
    def _hook_before_publish(self) -> bool:
        v = getattr(self, "_hbp", None)
        if v is None:
            v = self._hbp = has_hook_impls("funboost_before_publish")
            self._hap = has_hook_impls("funboost_after_publish")
        return v

    def _after_publish(self, task_ids: list[str]) -> None:
        if getattr(self, "_hap", False):
            get_plugin_manager().hook.funboost_after_publish(queue_name=self.queue_name, task_ids=task_ids)

    def _rpc_enabled(self, task_options: Optional[TaskOptions]) -> bool:
        if task_options is not None and getattr(task_options, "is_using_rpc_mode", None) is not None:
            return bool(task_options.is_using_rpc_mode)
        return self.params.is_using_rpc_mode

    def publish(self, msg: dict, task_id: Optional[str] = None,
                task_options: Optional[TaskOptions] = None) -> AsyncResult:
        """Send one task given as a dict of the function's arguments. The caller's dict is not changed."""
        if task_options is None and task_id is None and type(msg) is dict and "extra" not in msg \
                and (self._plain or (self._plain is None and self._plain_publish())):
            return self._publish_plain(msg)
        env, om = self._build(msg, task_id, task_options)
        self.broker.publish([om])
        self._after_publish([om.task_id])
        return AsyncResult(om.task_id, booster=self, rpc_enabled=self._rpc_enabled(task_options))

    _plain: Optional[bool] = None

    def _plain_publish(self) -> bool:
        """True when a publish without options needs nothing but check, envelope, send: no method
        receiver to serialise, no publish hooks. Decided once (hooks are looked up at first publish)."""
        self._plain = not self._is_method and not self._hook_before_publish and not getattr(self, "_hap", False)
        return self._plain

    def _plain_message(self, kwargs: dict) -> OutgoingMessage:
        """Check, envelope and message for a publish without options: the hot path of push / publish /
        publish_many, kept flat because it is most of a publisher's CPU per message."""
        self._check_kwargs(kwargs)
        env = build_envelope(kwargs)
        return self._message(env, env["extra"]["task_id"])

    def _publish_plain(self, kwargs: dict) -> AsyncResult:
        om = self._plain_message(kwargs)
        b = self._brokers.get(_PID[0]) or self.broker
        b.publish([om])
        return AsyncResult(om.task_id, self, self.params.is_using_rpc_mode)

    def push(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send one task with the function's own calling convention: ``f.push(1, y=2)``."""
        return self.publish(self._args_to_kwargs(args, kwargs))

    delay = push

    def _args_to_kwargs(self, args: tuple, kwargs: dict) -> dict:
        if not args:
            return dict(kwargs)
        if self._positional_fast and len(args) <= len(self._all):
            out = dict(zip(self._all, args))
            for k, v in kwargs.items():
                if k in out:
                    raise PublishArgumentsError(f"cannot publish to {self.queue_name!r}: {self.func_name}() got "
                                                f"multiple values for argument {k!r}")
                out[k] = v
            return out
        if self._sig is None:
            names = self._all
            if len(args) > len(names):
                raise PublishArgumentsError(f"{self.func_name}: too many positional arguments")
            return {**dict(zip(names, args)), **kwargs}
        try:
            bound = self._sig.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise PublishArgumentsError(f"cannot publish to {self.queue_name!r}: {self.func_name}(): {exc}") from None
        out = dict(bound.arguments)
        for prm in self._sig.parameters.values():
            if prm.kind == prm.VAR_KEYWORD and prm.name in out:
                out.update(out.pop(prm.name))
            elif prm.kind == prm.VAR_POSITIONAL and prm.name in out:
                raise PublishArgumentsError(f"{self.func_name}: *args functions cannot be published; use keywords")
        return out

    def publish_many(self, msgs: Iterable[dict], task_options: Optional[TaskOptions] = None,
                     batch_size: int = 1000) -> list[AsyncResult]:
        """Send many tasks in batches through the broker's batch publish (the fast path)."""
        results: list[AsyncResult] = []
        batch: list[OutgoingMessage] = []
        rpc = self._rpc_enabled(task_options)
        broker = self.broker
        plain = task_options is None and (self._plain or (self._plain is None and self._plain_publish()))
        for m in msgs:
            if plain and type(m) is dict and "extra" not in m:
                batch.append(self._plain_message(m))
            else:
                batch.append(self._build(m, None, task_options)[1])
            if len(batch) >= batch_size:
                broker.publish(batch)
                self._after_publish([o.task_id for o in batch])
                results.extend(AsyncResult(o.task_id, booster=self, rpc_enabled=rpc) for o in batch)
                batch = []
        if batch:
            broker.publish(batch)
            self._after_publish([o.task_id for o in batch])
            results.extend(AsyncResult(o.task_id, booster=self, rpc_enabled=rpc) for o in batch)
        return results

    def push_many(self, args_list: Iterable[Any], batch_size: int = 1000) -> list[AsyncResult]:
        """Each item is a tuple of positional args, a dict of kwargs, or a single argument."""
        def to_kwargs(item: Any) -> dict:
            if isinstance(item, dict):
                return item
            if isinstance(item, tuple):
                return self._args_to_kwargs(item, {})
            return self._args_to_kwargs((item,), {})
        return self.publish_many((to_kwargs(i) for i in args_list), batch_size=batch_size)

    async def aio_push(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.push(*args, **kwargs))

    async def aio_publish(self, msg: dict, task_id: Optional[str] = None,
                          task_options: Optional[TaskOptions] = None) -> AsyncResult:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.publish(msg, task_id, task_options))

    def sync_call(self, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Request/response brokers (``capabilities.request_response``): run remotely, return the
        result or raise the remote error, in one round trip."""
        caps = self.broker_cls.capabilities
        if not caps.request_response:
            raise NotImplementedError(f"broker kind {self.broker_cls.kind!r} has no sync_call; use "
                                      f"is_using_rpc_mode=True and push(...).get()")
        kw = self._args_to_kwargs(args, kwargs)
        if "extra" not in kw and (self._plain or (self._plain is None and self._plain_publish())):
            om = self._plain_message(kw)
        else:
            om = self._build(kw, None, None)[1]
        return self.broker.sync_call(om.body or dumps(om.payload),
                                     timeout if timeout is not None else self.params.rpc_timeout)

    # ---------------------------------------------------------------- queue management
    def get_message_count(self) -> int:
        """Messages waiting (ready + delayed). -1 if the broker cannot tell."""
        size = self.broker.queue_size()
        if size.ready is None:
            return -1
        return size.ready + (size.delayed or 0)

    def queue_size(self) -> QueueSize:
        return self.broker.queue_size()

    def clear(self) -> int:
        """Drop every waiting message of this queue."""
        n = self.broker.purge()
        self.logger.info("cleared queue %r (%s messages)", self.queue_name, n)
        return n

    clear_queue = clear

    def replay_dead_letters(self, max_count: Optional[int] = None, timeout: float = 1.0) -> int:
        """Move messages from ``<queue>_dlx`` back to this queue (their retry counters reset).
        Returns how many were moved."""
        from funboost.message import loads
        dlx = self.broker.dead_letter_broker()
        if max_count is None:
            # only what is there now: a message that fails again must not loop back into this call
            max_count = dlx.queue_size().ready
        moved = 0
        seen: set = set()
        while max_count is None or moved < max_count:
            want = 100 if max_count is None else min(100, max_count - moved)
            deliveries = dlx.fetch(want, timeout)
            if not deliveries:
                break
            out = []
            again = []
            for d in deliveries:
                body = d.body if isinstance(d.body, dict) else loads(d.body)
                tid = (body.get("extra") or {}).get("task_id") if isinstance(body, dict) else None
                if tid is not None and tid in seen:
                    again.append(d)
                    continue
                seen.add(tid)
                body = dict(body)
                extra = dict(body.get("extra") or {})
                for k in ("dead_letter_reason", "dead_letter_time", "_requeue_count", "_advanced_retry_count"):
                    extra.pop(k, None)
                extra["replayed"] = int(extra.get("replayed", 0)) + 1
                body["extra"] = extra
                out.append(OutgoingMessage(body="" if self.broker_cls.accepts_payload else dumps(body),
                                           task_id=str(extra.get("task_id", "")),
                                           payload=body if self.broker_cls.accepts_payload else None))
            if out:
                self.broker.publish(out)
                dlx.ack([d for d in deliveries if d not in again])
            if again:
                dlx.requeue(again)
                break
            moved += len(out)
        return moved

    def clear_filter_tasks(self) -> None:
        self.state_backend().filter_clear(self.queue_name)

    # ---------------------------------------------------------------- consuming
    def consume(self) -> "Booster":
        """Start consuming in background threads of this process; returns at once. Calling it twice
        in one process is a no-op."""
        with self._consume_lock:
            if self._consumer is not None and not self._consumer.stopped:
                return self
            from funboost.engine.consumer import Consumer
            self._consumer = Consumer(self)
            self._consumer.start()
            _keepalive.start()
        return self

    start_consuming_message = consume

    @property
    def consumer(self):
        return self._consumer

    def stop_consume(self, timeout: float = 30.0) -> None:
        """Stop this process's consumer gracefully (finish running tasks, flush acks)."""
        with self._consume_lock:
            c, self._consumer = self._consumer, None
        if c is not None:
            c.stop(timeout)

    def multi_process_consume(self, process_num: int = 1):
        """Start ``process_num`` processes that each consume this queue (stacked on the concurrency
        mode). Returns the list of processes."""
        from funboost.multiprocess import start_consumer_processes
        return start_consumer_processes({self.queue_name: process_num}, {self.queue_name: self})

    mp_consume = multi_process_consume
    multi_process_start = multi_process_consume

    # ---------------------------------------------------------------- control plane
    def pause(self) -> None:
        """Pause consuming this queue in every process and host sharing the state backend."""
        self.state_backend().set_flag(self.queue_name, "pause", True)

    def resume(self) -> None:
        self.state_backend().set_flag(self.queue_name, "pause", False)

    continue_consume = resume

    def set_qps(self, qps: Optional[float]) -> None:
        self.state_backend().set_flag(self.queue_name, "qps", qps)

    def set_concurrent_num(self, n: int) -> None:
        self.state_backend().set_flag(self.queue_name, "concurrent_num", int(n))

    def kill_task(self, task_id: str) -> None:
        """Cancel a task by id: a queued one never runs; a running one is stopped (needs
        ``is_support_remote_kill_task=True`` on the consumer)."""
        self.state_backend().request_kill(self.queue_name, task_id)

    def get_live_consumers(self) -> list[dict]:
        return self.state_backend().live_consumers(self.queue_name)

    def query_statuses(self, **filters: Any) -> list[dict]:
        table = self.params.function_result_status_persistence_conf.table_name or self.queue_name
        return self.state_backend().query_statuses(table, **filters)


class _BoundBoosterCall:
    """``obj.method`` where ``method`` is a booster: calling runs it with ``obj``; task API delegates."""

    def __init__(self, booster: Booster, obj: Any) -> None:
        self._booster, self._obj = booster, obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._booster.func(self._obj, *args, **kwargs)

    def push(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self._booster.push(self._obj, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._booster, name)


def boost(params: Optional[BoosterParams] = None, **kwargs: Any) -> Callable[[Callable], Booster]:
    """``@boost(BoosterParams(queue_name=..., ...))``; ``@boost(queue_name=...)`` works too."""
    if params is None:
        params = BoosterParams(**kwargs)
    elif isinstance(params, str):
        params = BoosterParams(queue_name=params, **kwargs)
    elif kwargs:
        params = params.model_copy(update=kwargs)

    def deco(func: Callable) -> Booster:
        return Booster(params, func)
    return deco


task_deco = boost


def _anything_consuming() -> bool:
    return any(b.consumer is not None and not b.consumer.stopped for b in BoostersManager.all_boosters())


_keepalive = KeepAlive("funboost-keepalive", _anything_consuming)


def ctrl_c_recv() -> None:
    """Block the main thread until Ctrl-C, then stop the consumers of this process gracefully."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for b in BoostersManager.all_boosters():
            if b.consumer is not None:
                b.stop_consume(5)
        sys.exit(0)


keep_sleep = ctrl_c_recv
run_forever = ctrl_c_recv


class BoostersManager:
    """Registry of boosters by queue name, and helpers to consume several queues."""

    _boosters: dict[str, Booster] = {}
    _lock = threading.Lock()

    @classmethod
    def regist_booster(cls, booster: Booster) -> None:
        with cls._lock:
            old = cls._boosters.get(booster.queue_name)
            if old is not None and old.func is not booster.func and old.func_name != booster.func_name:
                booster.logger.warning("queue %r was bound to %s and is now bound to %s", booster.queue_name,
                                       old.func_name, booster.func_name)
            cls._boosters[booster.queue_name] = booster

    register_booster = regist_booster

    @classmethod
    def get_booster(cls, queue_name: str, import_module: Optional[str] = None) -> Booster:
        b = cls._boosters.get(queue_name)
        if b is None and import_module:
            import importlib
            importlib.import_module(import_module)
            b = cls._boosters.get(queue_name)
        if b is None:
            raise KeyError(f"no booster for queue {queue_name!r}; known queues: {sorted(cls._boosters)}")
        return b

    @classmethod
    def get_or_create_booster_by_queue_name(cls, queue_name: str) -> Booster:
        return cls.get_booster(queue_name)

    @classmethod
    def build_booster(cls, params: BoosterParams) -> Booster:
        """Create a booster without the decorator (dynamic queues)."""
        if params.consuming_function is None:
            raise ValueError("build_booster needs BoosterParams(consuming_function=...)")
        existing = cls._boosters.get(params.queue_name)
        if existing is not None and existing.func is params.consuming_function:
            return existing
        return Booster(params, params.consuming_function)

    @classmethod
    def get_cross_project_publisher(cls, params: BoosterParams) -> Booster:
        """A publisher for a queue whose function lives elsewhere (arguments are not checked)."""
        def _remote(**kwargs: Any) -> None:
            raise RuntimeError("this booster only publishes; its function runs in another project")
        p = params.model_copy(update={"should_check_publish_func_params": False})
        b = Booster.__new__(Booster)
        Booster.__init__(b, p)
        b.func = _remote
        b.func_name = f"<remote {p.queue_name}>"
        b.is_coroutine = False
        b.function_kind = "COMMON_FUNCTION"
        b._is_method = False
        b._required, b._all, b._var_kw, b._sig, b._positional_fast = [], [], True, None, False
        b._freeze_signature_sets()
        return b

    @classmethod
    def all_boosters(cls) -> list[Booster]:
        return list(cls._boosters.values())

    @classmethod
    def get_all_queues(cls) -> list[str]:
        return sorted(cls._boosters)

    show_all_queues = get_all_queues

    @classmethod
    def push(cls, queue_name: str, *args: Any, **kwargs: Any) -> AsyncResult:
        return cls.get_booster(queue_name).push(*args, **kwargs)

    @classmethod
    def publish(cls, queue_name: str, msg: dict, task_id: Optional[str] = None,
                task_options: Optional[TaskOptions] = None) -> AsyncResult:
        return cls.get_booster(queue_name).publish(msg, task_id, task_options)

    @classmethod
    def consume_queues(cls, *queue_names: str) -> None:
        for q in queue_names:
            cls.get_booster(q).consume()

    consume = consume_queues

    @classmethod
    def consume_all_queues(cls) -> None:
        cls.consume_queues(*cls._boosters)

    consume_all = consume_all_queues

    @classmethod
    def consume_group(cls, booster_group: str) -> None:
        cls.consume_queues(*[q for q, b in cls._boosters.items() if b.params.booster_group == booster_group])

    @classmethod
    def multi_process_consume_queues(cls, **queue_process_num: int):
        from funboost.multiprocess import start_consumer_processes
        return start_consumer_processes(queue_process_num, {q: cls.get_booster(q) for q in queue_process_num})

    mp_consume = multi_process_consume_queues

    @classmethod
    def multi_process_consume_all_queues(cls, process_num: int = 1):
        return cls.multi_process_consume_queues(**{q: process_num for q in cls._boosters})

    mp_consume_all = multi_process_consume_all_queues

    @classmethod
    def multi_process_consume_group(cls, booster_group: str, process_num: int = 1):
        return cls.multi_process_consume_queues(
            **{q: process_num for q, b in cls._boosters.items() if b.params.booster_group == booster_group})

    mp_consume_group = multi_process_consume_group
