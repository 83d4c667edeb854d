"""The decorator and the handle it returns.

``@boost(BoosterParams(...))`` (or ``@BoosterParams(...)``) turns a function into a :class:`Booster`.
Calling the booster still runs the function locally; ``push``/``publish`` send tasks; ``consume``
starts consuming in background threads of this process.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Optional, Sequence, TypeVar, Union

from funboost.deadletter import replay_dead_letters
from funboost.eta import message_eta
from funboost.exceptions import PublishArgumentsError
from funboost.flags import QueueFlag, concurrency_value, qps_value
from funboost.keepalive import KeepAlive, install_signal_handlers, shutdown_requested, wait_for_shutdown
from funboost.message import build_envelope, dumps, envelope_copy, seal_envelope
from funboost.params import BoosterParams, TaskOptions
from funboost.publishing import MAX_BATCHES_IN_FLIGHT
from funboost.plugins.broker import Broker, OutgoingMessage, QueueSize, nothing_to_wait_for
from funboost.plugins.manager import get_plugin_manager, has_hook_impls, resolve_broker_kind
from funboost.records import _PID
from funboost.registry import BoostersManager
from funboost.result import AioAsyncResult, AsyncResult

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover - python 3.9
    from typing_extensions import ParamSpec

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.consumer import Consumer
    from funboost.engine.setup import ConsumerSetup
    from funboost.publishing import PipelinedPublisher
    from funboost.state.base import StateBackend

P = ParamSpec("P")  # the decorated function's parameters: push / __call__ are checked against them
R = TypeVar("R")  # its return type: AsyncResult[R]


def _make_logger(params: BoosterParams) -> logging.Logger:
    name = params.logger_name or f"{params.logger_prefix}funboost.{params.queue_name}"
    lg = logging.getLogger(name)
    lg.setLevel(params.log_level)
    from funboost.logs import configure_queue_logger
    configure_queue_logger(lg, params)
    return lg


class Booster(Generic[P, R]):
    """A decorated function: callable as before, plus the task API. Generic in the function's
    parameters ``P`` and return type ``R``, so a type checker checks ``push(...)`` and calls."""

    def __init__(self, params: Union[BoosterParams, str, None] = None, func: Optional[Callable] = None, *,
                 boost_params: Optional[BoosterParams] = None, **kwargs: Any) -> None:
        # the original's decorator was this class: @Booster(BoosterParams(...)), @Booster("queue", qps=...)
        if not isinstance(params, BoosterParams) or boost_params is not None or kwargs:
            params = resolve_boost_params(params, boost_params, **kwargs)
        self.params = params
        self.queue_name = params.queue_name
        self.func: Optional[Callable] = None
        self._brokers: dict[int, Broker] = {}
        # per process: the callable a publish goes through (the broker's publish, a GroupCommit's or a
        # PipelinedPublisher's; see funboost.publishing), and the pipelined publisher if any
        self._senders: dict[int, Callable[[Sequence[OutgoingMessage]], None]] = {}
        self._pipelined: dict[int, "PipelinedPublisher"] = {}
        self._broker_lock = threading.Lock()
        self._consumer: Optional["Consumer"] = None
        self._consume_lock = threading.Lock()
        from funboost.funboost_config_deafult import use_config_form_funboost_config_module
        use_config_form_funboost_config_module()  # a funboost_config.py of the original: once per process
        self.broker_cls = resolve_broker_kind(params.broker_kind).bind_params(params)
        self.broker_options = self.broker_cls.parse_options(params.broker_exclusive_config)
        self.logger = _make_logger(params)
        if func is not None:
            self._bind(func)

    # ---------------------------------------------------------------- decoration
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.func is None:  # used as  Booster(params)(func)
            if len(args) == 1 and not kwargs and callable(args[0]):
                self._bind(args[0])
                return self  # type: ignore[return-value]  # the undecorated form, Booster(params)(func)
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
        BoostersManager.register_booster(self)
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
        if self.broker_cls.capabilities.source_only:
            self.broker.check_accepts_new_messages()  # its own refusal, not an argument error
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

    def check_call_arguments(self, names: Any) -> None:
        """Consumer side: ``TypeError`` unless the argument names (a set-like of str) fit the function."""
        if not (self._required_set <= names and (self._var_kw or names <= self._all_set)):
            missing = [n for n in self._required if n not in names]
            unknown = [] if self._var_kw else [k for k in names if k not in self._all_set]
            raise TypeError(f"missing {missing}, unknown {unknown}; the function takes {self._all}")

    def convert_kwargs_for_call(self, kwargs: dict) -> dict:
        """Consumer side: check the arguments fit and rebuild method receivers."""
        self.check_call_arguments(kwargs.keys())
        if self._is_method:
            from funboost.methods import rebuild_receiver
            return rebuild_receiver(self, kwargs)
        return kwargs

    def get_callable(self) -> Callable[..., Any]:
        func = self.func
        if func is None:
            raise TypeError("Booster is not bound to a function yet")
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

    def _sender(self) -> Callable[[Sequence[OutgoingMessage]], None]:
        """This process's publish callable, built at the first publish (see ``publish_mode``)."""
        s = self._senders.get(_PID[0])
        if s is not None:
            return s
        broker = self.broker
        with self._broker_lock:
            pid = os.getpid()
            s = self._senders.get(pid)
            if s is None:
                s = self._senders[pid] = self._new_sender(broker)
        return s

    def _new_sender(self, broker: Broker) -> Callable[[Sequence[OutgoingMessage]], None]:
        from funboost.publishing import GroupCommit, PipelinedPublisher
        p = self.params
        if p.publish_mode == "pipelined":
            pub = self._pipelined[os.getpid()] = PipelinedPublisher(
                broker.publish, self.queue_name, window=p.publish_window_ms / 1000.0,
                max_batch=p.publish_window_max, retries=p.publish_retry_times, log=self.logger,
                begin=broker.publish_begin)
            # SIGTERM / Ctrl-C then flush the window before the process ends (as they drain consumers)
            install_signal_handlers()
            return pub.publish
        if self.broker_cls.capabilities.pipelined_publish:
            return GroupCommit(broker.publish, max_batch=p.publish_window_max).publish
        return broker.publish

    def flush(self, timeout: Optional[float] = None) -> None:
        """``publish_mode="pipelined"``: return once every message pushed by this process so far is on
        the broker; raise :class:`funboost.publishing.PublishFailed` for those that could not be
        published. In confirmed mode every push already was, so this returns at once."""
        pub = self._pipelined.get(os.getpid())
        if pub is not None:
            pub.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush (see :meth:`flush`) and release this process's publishing connection; a later publish
        opens a new one. Consumers are stopped with :meth:`stop_consume`."""
        pid = os.getpid()
        with self._broker_lock:
            pub = self._pipelined.pop(pid, None)
            self._senders.pop(pid, None)
        try:
            if pub is not None:
                pub.close(timeout)
        finally:
            with self._broker_lock:
                b = self._brokers.pop(pid, None)
            if b is not None:
                b.close()

    @property
    def publish_stats(self) -> dict[str, int]:
        """Pipelined mode: ``pushed``, ``confirmed``, ``failed``, ``pending`` of this process's publisher
        (all zero in confirmed mode, where a failed push raises at once)."""
        pub = self._pipelined.get(os.getpid())
        return pub.stats if pub is not None else {"pushed": 0, "confirmed": 0, "failed": 0, "pending": 0}

    def state_backend(self) -> "StateBackend":
        from funboost.state.base import get_state_backend
        return get_state_backend(self.params.state_backend)

    @staticmethod
    def eta_of(extra: dict) -> Optional[float]:
        """When a message with this envelope ``extra`` is due (see :func:`funboost.eta.message_eta`)."""
        return message_eta(extra)

    def consumer_setup(self) -> "ConsumerSetup":
        """What the engine's consumer needs of this booster (and nothing else of it)."""
        from funboost.engine.setup import ConsumerSetup
        return ConsumerSetup(params=self.params, logger=self.logger, func=self.get_callable(),
                             func_name=self.func_name, is_coroutine=self.is_coroutine, new_broker=self.new_broker,
                             state_backend=self.state_backend, convert_kwargs=self.convert_kwargs_for_call,
                             check_arguments=self.check_call_arguments,
                             arg_names=tuple(self._all), required_args=tuple(self._required))

    # ---------------------------------------------------------------- publishing
    def _build(self, kwargs: dict, task_id: Optional[str], task_options: Optional[TaskOptions],
               by_reference: bool = False) -> tuple[dict, OutgoingMessage]:
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
                eta = message_eta(extra)
            prio = extra.get("priority")
            if prio is not None and not caps.priority and not self.broker.supports_priority:
                self.logger.warning("broker %r has no priorities; the priority of %s is ignored",
                                    self.broker_cls.kind, extra["task_id"])
                prio = None
            key = extra.get("key")
            other = extra.get("other_extra_params")
            if other:  # the original's per-message routing (RABBITMQ_COMPLEX_ROUTING)
                key = key or other.get("routing_key_for_publish")
                headers = other.get("headers_for_publish")
                if headers:
                    om = self._message(env, extra["task_id"], prio, eta, key)
                    om.headers = {str(k): v for k, v in dict(headers).items()}
                    return env, om
        return env, self._message(env, extra["task_id"], prio, eta, key, by_reference)

    def _message(self, env: dict, task_id: str, priority: Optional[int] = None, eta: Optional[float] = None,
                 key: Optional[str] = None, by_reference: bool = False) -> OutgoingMessage:
        """The envelope as the broker takes it: a decoded copy for in-process brokers (the envelope itself when
        ``by_reference``: get_future's arguments may be any object), else JSON text."""
        if by_reference and self.broker_cls.accepts_payload:
            return OutgoingMessage("", task_id, priority, eta, key, payload=env)
        try:
            if self.broker_cls.accepts_payload:
                # an in-process broker takes a decoded copy: the same checks and the same values as on every
                # other kind (the caller's objects passed by reference changed under the consumer; sets, bytes
                # and objects reached the function while other kinds refused them)
                return OutgoingMessage("", task_id, priority, eta, key, payload=envelope_copy(env))
            return OutgoingMessage(dumps(env), task_id, priority, eta, key)
        except TypeError as exc:
            raise PublishArgumentsError(f"cannot publish to {self.queue_name!r}: {exc}. Arguments must be "
                                        f"JSON-serializable") from None

    # publish hooks are looked up at the first publish (plugins load on first use), then remembered
    _has_before_publish_hooks: Optional[bool] = None
    _has_after_publish_hooks = False

    @property
    def _hook_before_publish(self) -> bool:
        known = self._has_before_publish_hooks
        if known is None:
            known = self._has_before_publish_hooks = has_hook_impls("funboost_before_publish")
            self._has_after_publish_hooks = has_hook_impls("funboost_after_publish")
        return known

    def _after_publish(self, task_ids: list[str]) -> None:
        if self._has_after_publish_hooks:
            get_plugin_manager().hook.funboost_after_publish(queue_name=self.queue_name, task_ids=task_ids)

    def _rpc_enabled(self, task_options: Optional[TaskOptions]) -> bool:
        if task_options is not None and getattr(task_options, "is_using_rpc_mode", None) is not None:
            return bool(task_options.is_using_rpc_mode)
        return self.params.is_using_rpc_mode

    def publish(self, msg: dict, task_id: Optional[str] = None,
                task_options: Optional[TaskOptions] = None) -> "AsyncResult[R]":
        """Send one task given as a dict of the function's arguments. The caller's dict is not changed."""
        if task_options is None and task_id is None and type(msg) is dict and "extra" not in msg \
                and self._plain_publish_applies():
            return self._publish_plain(msg)
        env, om = self._build(msg, task_id, task_options)
        (self._senders.get(_PID[0]) or self._sender())([om])
        self._after_publish([om.task_id])
        return AsyncResult(om.task_id, booster=self, rpc_enabled=self._rpc_enabled(task_options))

    pub = publish  # the original's other names
    apply_async = publish

    _plain_publish_ok: Optional[bool] = None  # decided at the first publish

    def _plain_publish_applies(self) -> bool:
        """True when a publish without options needs nothing but check, envelope, send (the fast path,
        :meth:`_publish_plain`): no method receiver to serialise, no publish hooks. Decided once."""
        ok = self._plain_publish_ok
        if ok is None:
            ok = self._plain_publish_ok = (not self._is_method and not self._hook_before_publish
                                           and not self._has_after_publish_hooks)
        return ok

    def _plain_message(self, kwargs: dict, owned: bool = False) -> OutgoingMessage:
        """Check, envelope and message for a publish without options: the hot path of push / publish /
        publish_many, kept flat because it is most of a publisher's CPU per message. ``owned``: ``kwargs``
        was built for this message alone (push's arguments) and becomes the envelope, uncopied."""
        self._check_kwargs(kwargs)
        env = seal_envelope(kwargs) if owned else build_envelope(kwargs)
        return self._message(env, env["extra"]["task_id"])

    def _publish_plain(self, kwargs: dict, owned: bool = False) -> "AsyncResult[R]":
        om = self._plain_message(kwargs, owned)
        (self._senders.get(_PID[0]) or self._sender())([om])
        return AsyncResult(om.task_id, self, self.params.is_using_rpc_mode)

    def push(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult[R]":
        """Send one task with the function's own calling convention: ``f.push(1, y=2)``."""
        kw = self._args_to_kwargs(args, kwargs)  # a new dict: it may become the envelope itself
        if self._plain_publish_ok and "extra" not in kw:  # publish's fast-path test, once it is decided
            return self._publish_plain(kw, True)
        return self.publish(kw)

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

    #: batches of one ``publish_many`` call in flight at once (confirmed mode): while the broker confirms
    #: one, the next is built and sent, as a raw client streaming its publishes does
    MANY_IN_FLIGHT = MAX_BATCHES_IN_FLIGHT

    def publish_many(self, msgs: Iterable[dict], task_options: Optional[TaskOptions] = None,
                     batch_size: int = 1000) -> "list[AsyncResult[R]]":
        """Send many tasks in batches through the broker's batch publish (the fast path). Returns once the
        broker holds all of them (in confirmed mode; see ``publish_mode``)."""
        results: "list[AsyncResult[R]]" = []
        batch: list[OutgoingMessage] = []
        rpc = self._rpc_enabled(task_options)
        # confirmed mode: up to MANY_IN_FLIGHT batches begun (``Broker.publish_begin``), each waited for in
        # order (a broker without asynchronous confirms publishes in ``publish_begin``); pipelined mode:
        # the pipelined publisher takes each batch and nothing is waited for here
        if self.params.publish_mode == "pipelined":
            send = self._sender()

            def begin(messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
                send(messages)
                return nothing_to_wait_for
        else:
            begin = self.broker.publish_begin
        in_flight: "collections.deque[tuple[Callable[[], None], list[OutgoingMessage]]]" = collections.deque()

        def stored(wait: Callable[[], None], sent: list[OutgoingMessage]) -> None:
            wait()
            self._after_publish([o.task_id for o in sent])
            results.extend(AsyncResult(o.task_id, booster=self, rpc_enabled=rpc) for o in sent)

        def send_batch(sent: list[OutgoingMessage]) -> None:
            in_flight.append((begin(sent), sent))
            if len(in_flight) >= self.MANY_IN_FLIGHT:
                stored(*in_flight.popleft())

        plain = task_options is None and self._plain_publish_applies()
        try:
            for m in msgs:
                if plain and type(m) is dict and "extra" not in m:
                    batch.append(self._plain_message(m))
                else:
                    batch.append(self._build(m, None, task_options)[1])
                if len(batch) >= batch_size:
                    send_batch(batch)
                    batch = []
            if batch:
                send_batch(batch)
            while in_flight:
                stored(*in_flight.popleft())
        except BaseException:
            # the batches already begun are waited for (their confirmations are not left behind); the
            # first error is the one raised
            for wait, _ in in_flight:
                try:
                    wait()
                except Exception:
                    pass
            raise
        return results

    def push_many(self, args_list: Iterable[Any], batch_size: int = 1000) -> "list[AsyncResult[R]]":
        """Each item is a tuple of positional args, a dict of kwargs, or a single argument."""
        def to_kwargs(item: Any) -> dict:
            if isinstance(item, dict):
                return item
            if isinstance(item, tuple):
                return self._args_to_kwargs(item, {})
            return self._args_to_kwargs((item,), {})
        return self.publish_many((to_kwargs(i) for i in args_list), batch_size=batch_size)

    async def aio_push(self, *args: P.args, **kwargs: P.kwargs) -> "AioAsyncResult[R]":
        """``push`` from asyncio code: the publish runs in the loop's executor; the handle's accessors are
        awaited (``await (await f.aio_push(1)).result``)."""
        r = await asyncio.get_running_loop().run_in_executor(None, lambda: self.push(*args, **kwargs))
        return AioAsyncResult(r)

    async def aio_publish(self, msg: dict, task_id: Optional[str] = None,
                          task_options: Optional[TaskOptions] = None) -> "AioAsyncResult[R]":
        r = await asyncio.get_running_loop().run_in_executor(None, lambda: self.publish(msg, task_id, task_options))
        return AioAsyncResult(r)

    def get_future(self, *args: P.args, **kwargs: P.kwargs) -> "concurrent.futures.Future[Any]":
        """Publish like ``push`` and return a ``concurrent.futures.Future`` that resolves to the task's final
        :class:`~funboost.records.FunctionResultStatus` (``.success``, ``.result``, ``.exception_type``...),
        without RPC mode or a state backend. For brokers that run the task in this process and can call back
        (the memory broker: any Python object can be an argument there)."""
        broker = self.broker
        publish_with_reply = getattr(broker, "publish_with_reply", None)
        if publish_with_reply is None:
            raise NotImplementedError(f"get_future needs a broker that runs the task in this process (memory); "
                                      f"{self.broker_cls.kind!r} has none: use is_using_rpc_mode=True and "
                                      f"push(...).get()")
        env, om = self._build(self._args_to_kwargs(args, kwargs), None, None, by_reference=True)
        fut: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        publish_with_reply(om, fut.set_result)
        self._after_publish([om.task_id])
        return fut

    def get_aio_future(self, *args: P.args, **kwargs: P.kwargs) -> "asyncio.Future[Any]":
        """:meth:`get_future` as an awaitable of the running event loop."""
        return asyncio.wrap_future(self.get_future(*args, **kwargs))

    def sync_call(self, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Request/response brokers (``capabilities.request_response``): run remotely, return the
        result or raise the remote error, in one round trip."""
        caps = self.broker_cls.capabilities
        if not caps.request_response:
            raise NotImplementedError(f"broker kind {self.broker_cls.kind!r} has no sync_call; use "
                                      f"is_using_rpc_mode=True and push(...).get()")
        kw = self._args_to_kwargs(args, kwargs)
        if "extra" not in kw and self._plain_publish_applies():
            om = self._plain_message(kw, True)
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
        return replay_dead_letters(self.broker, max_count, timeout)

    def clear_filter_tasks(self) -> None:
        self.state_backend().filter_clear(self.queue_name)

    # ---------------------------------------------------------------- consuming
    def consume(self) -> "Booster[P, R]":
        """Start consuming in background threads of this process; returns at once. Calling it twice
        in one process is a no-op."""
        # graceful SIGTERM / SIGINT (main thread; user handlers are kept), installed before the consumer runs
        # its first task: a signal right after that must drain, not kill. Outside the consume lock: a
        # graceful stop in another thread waits for that lock (stop_all_consumers)
        install_signal_handlers()
        with self._consume_lock:
            if self._consumer is not None and not self._consumer.stopped:
                return self
            if shutdown_requested():  # SIGTERM / SIGINT came while the program was still starting up
                self.logger.warning("not consuming %r: the process is shutting down", self.queue_name)
                return self
            from funboost.engine.consumer import Consumer
            # an AbstractConsumer subclass: the queue's own, or the one of a custom broker (funboost.custom_broker)
            consumer_cls = (self.params.consumer_override_cls or getattr(self.broker_cls, "legacy_consumer_class", None)
                            or Consumer)
            if not issubclass(consumer_cls, Consumer):
                raise TypeError(f"consumer_override_cls must subclass funboost.AbstractConsumer, got {consumer_cls!r}")
            consumer = consumer_cls(self.consumer_setup())
            consumer.start()  # raises when the broker refuses the queue (Broker.prepare_consume): kept only once started
            self._consumer = consumer
        _keepalive.start()
        return self

    start_consuming_message = consume
    start = consume

    @property
    def consumer(self) -> Optional["Consumer"]:
        return self._consumer

    @property
    def publisher(self) -> "Booster[P, R]":
        """The original's ``booster.publisher``: publishing methods (publish, push, clear,
        get_message_count, sync_call …) are the booster's own."""
        return self

    def stop_consume(self, timeout: Optional[float] = None) -> Optional[dict]:
        """Stop this process's consumer gracefully (finish running tasks within ``timeout``, default
        ``shutdown_timeout``; hand prefetched messages back; flush acks). Returns the consumer's summary."""
        with self._consume_lock:
            c, self._consumer = self._consumer, None
        if c is not None:
            return c.stop(self.params.shutdown_timeout if timeout is None else timeout)
        return None

    def multi_process_consume(self, process_num: int = 1):
        """Start ``process_num`` processes that each consume this queue (stacked on the concurrency
        mode). Returns the list of processes."""
        from funboost.multiprocess import start_consumer_processes
        return start_consumer_processes({self.queue_name: process_num}, {self.queue_name: self})

    mp_consume = multi_process_consume
    multi_process_start = multi_process_consume

    def multi_process_pub_params_list(self, params_list: Sequence[dict], process_num: int = 16) -> int:
        """The original's bulk publish of many argument dicts with ``process_num`` processes. Here one
        process publishes them in batches (``publish_many``: one broker round trip per batch, faster than
        the original's processes on every kind that batches); returns how many were published."""
        del process_num  # accepted for the original's signature; batching replaces the processes
        self.publish_many(list(params_list))
        return len(params_list)

    def wait_for_possible_has_finish_all_tasks(self, minutes: float = 3) -> None:
        """Block until the queue has been empty, with no task finishing, for ``minutes`` in a row."""
        from funboost.compat import wait_for_possible_has_finish_all_tasks_by_conusmer_list
        wait_for_possible_has_finish_all_tasks_by_conusmer_list([self], minutes)

    @property
    def boost_params(self) -> BoosterParams:
        """The original's name of :attr:`params`."""
        return self.params

    @property
    def consuming_function(self) -> Optional[Callable]:
        """The original's name of :attr:`func`."""
        return self.func

    def fabric_deploy(self, host: str, port: int = 22, user: Optional[str] = None, password: Optional[str] = None,
                      **kwargs: Any) -> Any:
        """Upload the project to ``host`` over SSH and start ``process_num`` consumer processes of this
        queue there; returns a :class:`funboost.deploy.RemoteDeployment` (``.stop()``). See
        :func:`funboost.deploy.fabric_deploy` (needs ``funboost-core[deploy]``: paramiko)."""
        from funboost.deploy import fabric_deploy
        return fabric_deploy(self, host, port, user, password, **kwargs)

    # ---------------------------------------------------------------- control plane
    def pause(self) -> None:
        """Pause consuming this queue in every process and host sharing the state backend."""
        self._set_flag(QueueFlag.PAUSE, True)

    def resume(self) -> None:
        self._set_flag(QueueFlag.PAUSE, False)

    continue_consume = resume
    pause_consume = pause

    def set_qps(self, qps: Optional[float]) -> None:
        """Change the queue's rate on every consumer (None or 0: no limit). ValueError for NaN, infinity or
        a negative number."""
        self._set_flag(QueueFlag.QPS, qps_value(qps))

    def set_concurrent_num(self, n: int) -> None:
        """Change the worker count of every consumer of the queue. ValueError unless an integer >= 1."""
        self._set_flag(QueueFlag.CONCURRENT_NUM, concurrency_value(n))

    def _set_flag(self, flag: QueueFlag, value: Any) -> None:
        self.state_backend().set_flag(self.queue_name, flag.value, value)  # stored under the plain name

    def kill_task(self, task_id: str) -> None:
        """Cancel a task by id: a queued one never runs; a running one is stopped (needs
        ``is_support_remote_kill_task=True`` on the consumer)."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"kill_task takes a task id (a non-empty string), got {task_id!r}")
        self.state_backend().request_kill(self.queue_name, task_id)

    def get_live_consumers(self) -> list[dict]:
        return self.state_backend().live_consumers(self.queue_name)

    def query_statuses(self, **filters: Any) -> list[dict]:
        table = self.params.function_result_status_persistence_conf.table_name or self.queue_name
        return self.state_backend().query_statuses(table, **filters)


class _BoundBoosterCall:
    """``obj.method`` where ``method`` is a booster: calling runs it with ``obj``; task API delegates."""

    def __init__(self, booster: "Booster[Any, Any]", obj: Any) -> None:
        self._booster, self._obj = booster, obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        func = self._booster.func
        assert func is not None  # a bound method access implies a decorated function
        return func(self._obj, *args, **kwargs)

    def push(self, *args: Any, **kwargs: Any) -> "AsyncResult[Any]":
        if isinstance(self._obj, type) and args and args[0] is self._obj:
            # ``C.method.push(C, x)``, the documented form for class methods, with ``@classmethod`` above
            # ``@boost``: on Pythons that bind the booster to C here (3.9-3.12) the class came twice
            args = args[1:]
        return self._booster.push(self._obj, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._booster, name)


def resolve_boost_params(params: Union[BoosterParams, str, None] = None, boost_params: Optional[BoosterParams] = None,
                         **kwargs: Any) -> BoosterParams:
    """The BoosterParams of every form ``boost`` takes, as the original's: ``boost(BoosterParams(...))``,
    ``boost("queue", qps=...)``, ``boost(queue_name=..., ...)``, ``boost(boost_params=BoosterParams(...))``
    (a queue name given beside it is the original's old spelling and is ignored), and keyword arguments beside
    a BoosterParams, which override its fields. Every form is validated: a misspelt keyword is an error."""
    base = params if isinstance(params, BoosterParams) else boost_params
    if base is None:
        if isinstance(params, str):
            return BoosterParams(queue_name=params, **kwargs)
        if params is None:
            return BoosterParams(**kwargs)
        raise TypeError(f"boost() takes a BoosterParams or a queue name, got {params!r}")
    if not isinstance(base, BoosterParams):
        raise TypeError(f"boost_params must be a BoosterParams, got {base!r}")
    if not kwargs:
        return base
    # what the user set, plus the overrides, through validation again (model_copy(update=) would not check)
    data = {name: getattr(base, name) for name in base.model_fields_set}
    data.update(kwargs)
    return type(base)(**data)


if TYPE_CHECKING:  # pragma: no cover - for type checkers only: at run time every booster is a Booster
    from typing import Coroutine, Protocol, overload

    class AsyncBooster(Booster[P, R]):
        """The booster of an ``async def`` function returning ``R``: a call returns the coroutine, while
        ``push(...).get()`` and ``await (await aio_push(...)).result`` give ``R`` (not the coroutine)."""

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...  # type: ignore[override]

    class BoostDecorator(Protocol):
        @overload
        def __call__(self, func: Callable[P, Coroutine[Any, Any, R]]) -> AsyncBooster[P, R]: ...

        @overload
        def __call__(self, func: Callable[P, R]) -> Booster[P, R]: ...


def boost(params: Union[BoosterParams, str, None] = None, *, boost_params: Optional[BoosterParams] = None,
          **kwargs: Any) -> "BoostDecorator":
    """``@boost(BoosterParams(queue_name=..., ...))``; ``@boost(queue_name=...)``, ``@boost("queue_name", ...)``
    and ``@boost(boost_params=...)`` work too (see :func:`resolve_boost_params`). The booster keeps the
    function's signature for type checkers: ``f.push(...)`` takes the function's arguments and returns
    ``AsyncResult[R]``."""
    validated = resolve_boost_params(params, boost_params, **kwargs)

    def deco(func: Callable[P, R]) -> Booster[P, R]:
        return Booster(validated, func)
    return deco  # type: ignore[return-value]  # (its overloads are BoostDecorator's)


task_deco = boost


def _anything_consuming() -> bool:
    return any(b.consumer is not None and not b.consumer.stopped for b in BoostersManager.all_boosters())


_keepalive = KeepAlive("funboost-keepalive", _anything_consuming)


def ctrl_c_recv() -> None:
    """Block the main thread until SIGINT (Ctrl-C) or SIGTERM, then stop the consumers of this process
    gracefully and exit 0."""
    sys.exit(wait_for_shutdown())


keep_sleep = ctrl_c_recv
run_forever = ctrl_c_recv


__all__ = ["Booster", "BoostersManager", "boost", "task_deco", "ctrl_c_recv", "keep_sleep", "run_forever"]
