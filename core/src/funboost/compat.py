"""Names of the original funboost's public surface that have no other home here, each a thin real
version on this project's engine (see docs/migrating.md for the table of what maps to what).

Everything here is re-exported from ``funboost`` and from the original's module paths
(``funboost.consumers.base_consumer``, ``funboost.factories.publisher_factory`` …).
"""
from __future__ import annotations

import abc
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from funboost.booster import Booster
from funboost.context import fct
from funboost.custom_broker import AbstractPublisher, EmptyPublisher, legacy_broker_class, is_legacy_publisher_class
from funboost.engine.consumer import Consumer
from funboost.exceptions import RpcNotEnabled
from funboost.logs import ensure_console_handler
from funboost.params import BoosterParams, FunctionResultStatusPersistenceConfig, PublisherParams
from funboost.plugins.broker import Broker, Delivery
from funboost.registry import BoostersManager

logger = logging.getLogger("funboost.compat")

#: the original's name for "this result cannot be waited for" (rpc mode off)
HasNotAsyncResult = RpcNotEnabled

# A publisher is a Booster here (publish / push / clear / get_message_count / sync_call live on it);
# AbstractPublisher is the base of the original's custom-broker publisher classes, and a booster counts as one
AbstractPublisher.register(Booster)


class AbstractConsumer(Consumer):
    """Base of a consumer class given as ``BoosterParams(consumer_override_cls=...)``, or of the consumer class
    of a custom broker (``register_custom_broker`` / ``BrokerEnum.EMPTY``, see :mod:`funboost.custom_broker`).

    Override ``_user_convert_msg_before_run(msg)`` to consume messages that other programs wrote in their
    own format: ``msg`` is the broker's body (a dict when it was a JSON object, else the text) and the
    return value must be the funboost message, a dict of the function's keyword arguments (``extra``
    optional). A conversion that raises dead-letters the message with the reason.

    A custom broker's consumer class implements ``_dispatch_task()`` (a loop handing each message of the
    user's store to ``self._submit_task({'body': msg})``), ``_confirm_consume(kw)`` and ``_requeue(kw)``;
    ``custom_init()`` runs at the end of ``__init__``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_name: str = self.params.queue_name
        self._queue_name = self.queue_name  # the original's attribute names, read by its consumer classes
        self.consumer_params = self.params
        self._legacy_broker: Any = None  # set by a custom broker's run_consumer
        self.custom_init()

    def custom_init(self) -> None:
        """Open connections etc.; called at the end of ``__init__``."""

    def _submit_task(self, kw: dict) -> None:
        """Hand one message of a custom broker's store to the engine (``kw['body']``: the message, a dict
        or JSON text; the whole ``kw`` comes back to ``_confirm_consume`` / ``_requeue``). Blocks while the
        consumer is busy; raises :class:`funboost.custom_broker.ConsumerStopping` once it stops."""
        if self._legacy_broker is None:
            raise TypeError("_submit_task is for the consumer class of a custom broker (register_custom_broker, "
                            "or BrokerEnum.EMPTY with consumer_override_cls), started by consume()")
        self._legacy_broker.submit(kw)

    def _user_convert_msg_before_run(self, msg: Union[dict, str]) -> dict:
        return msg  # type: ignore[return-value]

    def prepare(self, d: Delivery):  # type: ignore[override]
        if type(self)._user_convert_msg_before_run is not AbstractConsumer._user_convert_msg_before_run:
            body = d.body
            if isinstance(body, (bytes, bytearray, memoryview)):
                body = bytes(body).decode("utf-8", errors="replace")
            if isinstance(body, str):
                try:
                    body = json.loads(body)
                except ValueError:
                    pass  # foreign plain text: the converter gets the text
            try:
                d.body = self._user_convert_msg_before_run(body)
            except Exception as exc:  # noqa: BLE001 - any converter bug dead-letters, never loops
                self._dead_letter_malformed(d, f"_user_convert_msg_before_run failed: {exc!r}")
                return None
        return super().prepare(d)


class EmptyConsumer(AbstractConsumer, metaclass=abc.ABCMeta):
    """The original's template for a custom broker's consumer class: ``_dispatch_task``,
    ``_confirm_consume`` and ``_requeue`` are abstract, so a missing one fails when the class is used."""

    @abc.abstractmethod
    def _dispatch_task(self) -> None: ...

    @abc.abstractmethod
    def _confirm_consume(self, kw: dict) -> None: ...

    @abc.abstractmethod
    def _requeue(self, kw: dict) -> None: ...


class BoosterDiscovery:
    """Import every module under ``booster_dirs`` (relative to ``project_root_path``) whose file name
    matches ``py_file_re_str``, so that their ``@boost`` functions register with BoostersManager before
    ``BoostersManager.consume_all_queues()`` or the CLI runs."""

    def __init__(self, project_root_path: Union[str, Path], booster_dirs: Sequence[Union[str, Path]],
                 max_depth: int = 1, py_file_re_str: Optional[str] = None) -> None:
        self.project_root_path = Path(project_root_path).resolve()
        self.booster_dirs = list(booster_dirs)
        self.max_depth = max_depth
        self.py_file_re = re.compile(py_file_re_str) if py_file_re_str else None

    def _files(self) -> Iterable[Path]:
        for d in self.booster_dirs:
            base = Path(d)
            base = base if base.is_absolute() else self.project_root_path / base
            if not base.is_dir():
                raise FileNotFoundError(f"BoosterDiscovery: {base} is not a directory")
            for path in sorted(base.rglob("*.py")):
                depth = len(path.relative_to(base).parts)
                if depth > self.max_depth or path.name.startswith("_"):
                    continue
                if self.py_file_re and not self.py_file_re.search(path.name):
                    continue
                yield path.resolve()

    def auto_discovery(self) -> list[str]:
        """Import the matching modules (by dotted name when under the project root, so a module is never
        imported twice); returns their names."""
        root = str(self.project_root_path)
        if root not in sys.path:
            sys.path.insert(0, root)
        imported = []
        for path in self._files():
            try:
                rel = path.relative_to(self.project_root_path).with_suffix("")
                name = ".".join(rel.parts)
                importlib.import_module(name)
            except ValueError:  # outside the project root: import from the file
                name = f"funboost_discovered_{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[name] = module
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            imported.append(name)
        logger.info("BoosterDiscovery imported %d modules: %s", len(imported), imported)
        return imported


class BoosterParamsComplete(BoosterParams):
    """BoosterParams with everything recorded: rpc results, status and result records, heartbeats."""

    is_using_rpc_mode: bool = True
    is_send_consumer_heartbeat_to_redis: bool = True
    function_result_status_persistence_conf: FunctionResultStatusPersistenceConfig = \
        FunctionResultStatusPersistenceConfig(is_save_status=True, is_save_result=True)


def get_current_taskid() -> Optional[str]:
    """The running task's id, or None outside a task."""
    ctx = fct.get()
    return ctx.task_id if ctx is not None else None


def get_publisher(publisher_params: Union[PublisherParams, BoosterParams, None] = None, **kwargs: Any) -> Booster:
    """A publisher for a queue without a local function (the booster of that queue if one exists here)."""
    params = publisher_params if publisher_params is not None else PublisherParams(**kwargs)
    try:
        return BoostersManager.get_booster(params.queue_name)
    except Exception:  # noqa: BLE001 - not registered in this process: publish-only
        return BoostersManager.get_cross_project_publisher(params)


def get_consumer(boost_params: BoosterParams) -> Consumer:
    """The consumer of ``boost_params.consuming_function`` (not started; call ``start()``)."""
    if boost_params.consuming_function is None:
        raise ValueError("get_consumer needs BoosterParams(consuming_function=...)")
    booster: Booster[..., Any] = Booster(boost_params, boost_params.consuming_function)
    cls = boost_params.consumer_override_cls or Consumer
    return cls(booster.consumer_setup())


def register_custom_broker(broker_kind: Union[str, int], publisher_class: Optional[type] = None,
                           consumer_class: Optional[type] = None) -> None:
    """Register a broker under ``broker_kind`` (a name, or a number as in the original's examples).

    Either the original's class pair, an :class:`AbstractPublisher` subclass (``_publish_impl``, ``clear``,
    ``get_message_count``, ``close``) and an :class:`AbstractConsumer` subclass (``_dispatch_task``,
    ``_confirm_consume``, ``_requeue``), see :mod:`funboost.custom_broker`; or this project's plugin API, one
    :class:`funboost.Broker` subclass passed as ``publisher_class`` (docs/writing-a-broker-plugin.md)."""
    from funboost.plugins.manager import get_broker_registry
    kind = str(broker_kind)
    cls = publisher_class if publisher_class is not None else consumer_class
    if isinstance(cls, type) and issubclass(cls, Broker):
        get_broker_registry().register(cls, aliases=[kind])
        return
    if is_legacy_publisher_class(publisher_class) or (
            isinstance(consumer_class, type) and issubclass(consumer_class, AbstractConsumer)):
        get_broker_registry().register(legacy_broker_class(kind, publisher_class, consumer_class), aliases=[kind])
        return
    raise TypeError(
        f"register_custom_broker({broker_kind!r}, ...): pass an AbstractPublisher subclass and an AbstractConsumer "
        f"subclass (the original's API), or one funboost.Broker subclass; got {publisher_class!r}, {consumer_class!r}")


def register_broker_exclusive_config_default(broker_kind: str, broker_exclusive_config_default: dict) -> None:
    """Defaults merged under ``broker_exclusive_config`` of every booster of ``broker_kind``."""
    from funboost.params import register_broker_options_default
    register_broker_options_default(broker_kind, broker_exclusive_config_default)


class RemoteTaskKiller:
    """Ask the consumers of ``queue_name`` to kill task ``task_id`` (needs ``is_support_remote_kill_task``)."""

    def __init__(self, queue_name: str, task_id: str) -> None:
        self.queue_name = queue_name
        self.task_id = task_id

    def send_kill_remote_task_comd(self) -> None:
        BoostersManager.get_booster(self.queue_name).kill_task(self.task_id)


class ActiveCousumerProcessInfoGetter:
    """Live consumers (heartbeats in the state backend), with the original's method names. Works in a process
    that defines no booster (a monitoring script): the queue's own booster's state backend when this process
    knows the queue, else ``state`` or the configured one (``FUNBOOST_STATE_BACKEND``). Each dict also
    carries the original's key names (``computer_ip``, ``computer_name``, ``process_id``, ``queue_name``,
    ``hearbeat_timestamp``, ``start_timestamp``)."""

    def __init__(self, state: Any = None) -> None:
        self._state = state

    def _backend(self, queue_name: Optional[str] = None) -> Any:
        if self._state is not None:
            return self._state
        if queue_name is not None and queue_name in BoostersManager.get_all_queues():
            return BoostersManager.get_booster(queue_name).state_backend()
        from funboost.state.base import get_state_backend
        return get_state_backend()

    @staticmethod
    def _with_original_keys(info: dict) -> dict:
        info = dict(info)
        for new, old in (("ip", "computer_ip"), ("host", "computer_name"), ("pid", "process_id"),
                         ("queue", "queue_name"), ("last_seen", "hearbeat_timestamp"), ("started", "start_timestamp")):
            if new in info:
                info.setdefault(old, info[new])
        return info

    def _all(self) -> list[dict]:
        seen: dict[str, dict] = {}
        backends = [self._backend()] + [BoostersManager.get_booster(q).state_backend()
                                        for q in BoostersManager.get_all_queues()] if self._state is None else [self._state]
        for be in {id(b): b for b in backends}.values():
            for info in be.live_consumers(None):
                seen[info.get("consumer_id") or repr(info)] = self._with_original_keys(info)
        return list(seen.values())

    def get_all_hearbeat_info_by_queue_name(self, queue_name: str) -> list[dict]:
        return [self._with_original_keys(i) for i in self._backend(queue_name).live_consumers(queue_name)]

    def get_all_hearbeat_info_by_ip(self, ip: Optional[str] = None) -> list[dict]:
        """``ip`` None: this machine's consumers."""
        if ip is None:
            import socket
            from funboost.engine.consumer import _host_ip
            ips = {_host_ip(), socket.gethostname()}
        else:
            ips = {ip}
        return [i for i in self._all() if i.get("ip") in ips or i.get("host") in ips]

    def get_all_ips(self) -> list[str]:
        return sorted({str(i["ip"]) for i in self._all() if i.get("ip")})

    def get_all_hearbeat_info_partition_by_queue_name(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for i in self._all():
            out.setdefault(i.get("queue", ""), []).append(i)
        return out

    def get_all_hearbeat_info_partition_by_ip(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for i in self._all():
            out.setdefault(i.get("ip", ""), []).append(i)
        return out


def wait_for_possible_has_finish_all_tasks_by_conusmer_list(consumer_list: Sequence[Any], minutes: float = 3) -> None:
    """Block until every queue has been empty, with no task finishing, for ``minutes`` in a row.
    ``consumer_list`` holds consumers or boosters."""
    boosters = [getattr(c, "setup", c) for c in consumer_list]
    boosters = [BoostersManager.get_booster(b.params.queue_name) if not isinstance(b, Booster) else b
                for b in boosters]

    def snapshot() -> tuple:
        return tuple((b.get_message_count(), b.consumer.stats.total_runs if b.consumer else 0) for b in boosters)

    quiet_since, last = time.monotonic(), snapshot()
    while time.monotonic() - quiet_since < minutes * 60:
        time.sleep(min(1.0, minutes * 60 / 4))
        now = snapshot()
        if now != last or any(count for count, _ in now):
            quiet_since, last = time.monotonic(), now


def show_current_threads_num(sleep_time: float = 600, process_name: Optional[str] = None, block: bool = False,
                             daemon: bool = True) -> None:
    """Log the number of threads of this process every ``sleep_time`` seconds."""
    name = process_name or sys.argv[0]

    def loop() -> None:
        while True:
            logger.info("process %s has %d threads", name, threading.active_count())
            time.sleep(sleep_time)

    if block:
        loop()
    else:
        threading.Thread(target=loop, name="funboost-threads-num", daemon=daemon).start()


# ---- logging: nb_log's helpers map to the standard logging module (funboost's console handler)
flogger = logging.getLogger("funboost")


def get_logger(name: Optional[str] = None, log_level_int: int = logging.DEBUG, *, log_filename: Optional[str] = None,
               log_path: Optional[str] = None, log_file_size: int = 100, **_ignored: Any) -> logging.Logger:
    """nb_log's ``get_logger`` on the standard logging module: funboost's console handler (coloured on a
    terminal, path:line), and with ``log_filename`` a size-rotating file shared safely by several processes
    (``log_path`` folder, default the funboost data folder's ``logs``; ``log_file_size`` in MB). nb_log's
    other options are ignored."""
    ensure_console_handler()
    lg = logging.getLogger(name)
    lg.setLevel(log_level_int)
    if log_filename:
        from funboost.logs import FORMAT, ProcessSafeRotatingFileHandler, TaskIdFilter
        from funboost.paths import user_data_dir
        path = os.path.join(log_path or str(user_data_dir() / "logs"), log_filename)
        if not any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in lg.handlers):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fh = ProcessSafeRotatingFileHandler(path, maxBytes=int(log_file_size) * 1024 * 1024, backupCount=5,
                                                encoding="utf-8")
            fh.setFormatter(logging.Formatter(FORMAT + " (%(pathname)s:%(lineno)d)"))
            fh.addFilter(TaskIdFilter())
            lg.addHandler(fh)
    return lg


get_funboost_file_logger = get_logger
nb_print = print


class FunboostFileLoggerMixin:
    """``self.logger``: a logger named after the class."""

    @property
    def logger(self) -> logging.Logger:
        return get_logger(type(self).__name__)


class FunboostMetaTypeFileLogger(type):
    """Metaclass giving each class a ``logger`` attribute named after it."""

    def __init__(cls, name: str, bases: tuple, namespace: dict) -> None:
        super().__init__(name, bases, namespace)
        cls.logger = get_logger(name)


def enable_ctrl_c_quit_on_windows() -> None:
    """Kept for imports: Ctrl-C stops consumers on every platform here (signal handlers in consume())."""


__all__ = [
    "AbstractConsumer", "AbstractPublisher", "ActiveCousumerProcessInfoGetter", "BoosterDiscovery",
    "BoosterParamsComplete", "EmptyConsumer", "EmptyPublisher", "FunboostFileLoggerMixin", "FunboostMetaTypeFileLogger", "HasNotAsyncResult",
    "RemoteTaskKiller", "enable_ctrl_c_quit_on_windows", "flogger", "get_consumer", "get_current_taskid",
    "get_funboost_file_logger", "get_logger", "get_publisher", "nb_print", "register_broker_exclusive_config_default",
    "register_custom_broker", "show_current_threads_num", "wait_for_possible_has_finish_all_tasks_by_conusmer_list",
]


class RedisMixin:
    """The original's mixin giving a class redis clients of funboost's configuration:
    ``redis_db_frame`` (``FUNBOOST_REDIS_URL``, the queues' server) and ``redis_db_filter_and_rpc_result``
    (``FUNBOOST_STATE_REDIS_URL``, else the same). Needs funboost-redis (the redis client)."""

    @property
    def redis_db_frame(self) -> Any:
        return _redis_client(os.environ.get("FUNBOOST_REDIS_URL") or "redis://127.0.0.1:6379/0")

    @property
    def redis_db_filter_and_rpc_result(self) -> Any:
        return _redis_client(os.environ.get("FUNBOOST_STATE_REDIS_URL") or os.environ.get("FUNBOOST_REDIS_URL")
                             or "redis://127.0.0.1:6379/0")


_redis_clients: dict = {}


def _redis_client(url: str) -> Any:
    from funboost.funboost_config_deafult import use_config_form_funboost_config_module
    use_config_form_funboost_config_module()
    client = _redis_clients.get((os.getpid(), url))
    if client is None:
        try:
            import redis
        except ImportError as exc:
            raise ImportError("RedisMixin needs the redis client: pip install funboost-redis") from exc
        client = _redis_clients[(os.getpid(), url)] = redis.Redis.from_url(url)
    return client


class ResultFromMongo:
    """The original's non-blocking look-up of a persisted status record by task id. Records live in the
    state backend here (``function_result_status_persistence_conf=...(is_save_status=True)``), not in
    MongoDB; ``mongo_col_name`` is the queue's status table (its queue name unless ``table_name`` was set;
    the original's ``'<queue>_result:<task id>'`` ids name it too)."""

    def __init__(self, task_id: str, mongo_col_name: Optional[str] = None, state_backend: Optional[str] = None) -> None:
        self.task_id = task_id
        if mongo_col_name is None and "_result:" in task_id:
            mongo_col_name = task_id.split("_result:")[0]
        if mongo_col_name is None:
            raise ValueError("ResultFromMongo needs the queue's status table: ResultFromMongo(task_id, queue_name)")
        self.col_name = mongo_col_name
        self.state_backend = state_backend
        self.mongo_row: Optional[dict] = None

    def query_result(self) -> Optional[dict]:
        from funboost.state.base import get_state_backend
        try:
            backend = BoostersManager.get_booster(self.col_name).state_backend()
        except KeyError:
            backend = get_state_backend(self.state_backend)
        rows = backend.query_statuses(self.col_name, task_id=self.task_id, limit=1)
        self.mongo_row = rows[0] if rows else None
        return self.mongo_row

    def get_status_and_result(self) -> Optional[dict]:
        return self.query_result()

    def get_result(self) -> Any:
        row = self.query_result()
        return row.get("result") if row else None

