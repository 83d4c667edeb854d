"""User-facing configuration models: BoosterParams, TaskOptions and friends (pydantic v2).

``extra="forbid"`` everywhere: a misspelt option is an error, never a silent default. A subclass of
BoosterParams may override defaults with or without a type annotation, as users of the original write::

    class MyParams(BoosterParams):
        broker_kind = BrokerEnum.REDIS_ACK_ABLE
        max_retry_times = 5
"""
from __future__ import annotations

import datetime as _dt
import logging
import warnings
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic._internal._model_construction import ModelMetaclass

from funboost.enums import BrokerEnum, ConcurrentModeEnum
from funboost.eta import eta_to_timestamp  # noqa: F401  (also importable from here, as before)
from funboost.exceptions import MalformedMessage
from funboost.message import check_options

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover - python 3.9
    from typing_extensions import ParamSpec

if TYPE_CHECKING:  # pragma: no cover
    from typing import Coroutine, overload

    from funboost.booster import AsyncBooster, Booster

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _default_shutdown_timeout() -> float:
    from funboost.keepalive import default_shutdown_timeout
    return default_shutdown_timeout()

_CONCURRENT_MODES = {"threading", "gevent", "eventlet", "async", "single_thread"}
_MODE_ALIASES = {"solo": "single_thread", "asyncio": "async", "thread": "threading", "threads": "threading"}

# Old (misspelt or renamed) keys of the original funboost that a user would plausibly have in code.
_DEPRECATED_KEYS = {
    "function_result_status_persistance_conf": "function_result_status_persistence_conf",
    "is_send_consumer_hearbeat_to_redis": "is_send_consumer_heartbeat_to_redis",
    # spellings of earlier original versions that 55.0 still maps
    "msg_expire_senconds": "msg_expire_seconds",
    "consumin_function_decorator": "consuming_function_decorator",
}


class _DefaultsOverrideMeta(ModelMetaclass):
    """Lets a subclass override a field's default without repeating its annotation."""

    def __new__(mcs, name, bases, namespace, **kwargs):  # noqa: N804
        annotations = dict(namespace.get("__annotations__", {}))
        for base in bases:
            base_fields = getattr(base, "model_fields", None) or {}
            for key, value in namespace.items():
                if key in base_fields and key not in annotations and not callable(value) \
                        and not isinstance(value, (classmethod, staticmethod, property)):
                    annotations[key] = base_fields[key].annotation
        namespace["__annotations__"] = annotations
        return super().__new__(mcs, name, bases, namespace, **kwargs)


class FunctionResultStatusPersistenceConfig(BaseModel):
    """Per-run status/result records (written in batches to the state backend)."""

    model_config = ConfigDict(extra="forbid")
    is_save_status: bool = False
    is_save_result: bool = False
    expire_seconds: int = 7 * 24 * 3600
    is_use_bulk_insert: bool = True
    table_name: Optional[str] = None

    @model_validator(mode="after")
    def _result_needs_status(self):
        if self.is_save_result and not self.is_save_status:
            raise ValueError("is_save_result=True requires is_save_status=True")
        return self


FunctionResultStatusPersistanceConfig = FunctionResultStatusPersistenceConfig  # original spelling


class AdvancedRetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retry_mode: str = "sleep"  # "sleep" in the worker, or "requeue" with a countdown
    retry_base_interval: float = 1.0
    retry_multiplier: float = 2.0
    retry_max_interval: float = 60.0
    retry_jitter: bool = False

    @field_validator("retry_mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("sleep", "requeue"):
            raise ValueError("retry_mode must be 'sleep' or 'requeue'")
        return v


def _normalize_mode(v: Any) -> str:
    s = str(v).strip().lower()
    s = _MODE_ALIASES.get(s, s)
    if s not in _CONCURRENT_MODES:
        raise ValueError(f"concurrent_mode must be one of {sorted(_CONCURRENT_MODES)}, got {v!r}")
    return s


_BROKER_OPTIONS_DEFAULTS: dict[type, dict[str, Any]] = {}  # by broker class, so every alias of a kind shares them


def register_broker_options_default(broker_kind: str, defaults: dict[str, Any]) -> None:
    """Options merged under ``broker_exclusive_config`` of every BoosterParams of ``broker_kind`` (any of
    its names) made afterwards (the original's ``register_broker_exclusive_config_default``)."""
    from funboost.plugins.manager import resolve_broker_kind
    _BROKER_OPTIONS_DEFAULTS[resolve_broker_kind(broker_kind)] = dict(defaults)


class FunboostCompatWarning(UserWarning):
    """A setting of the original funboost that this project accepts but handles differently."""


# field -> (value that needs no warning, what this project does instead)
_COMPAT_FIELD_NOTES: dict[str, tuple[Any, str]] = {
    "publisher_override_cls": (None, "publishing is done by the broker plugin (the class is used with "
                               "broker_kind EMPTY and register_custom_broker only); to change messages before "
                               "they are sent implement the funboost_before_publish hook (funboost.hookimpl)"),
    "is_auto_start_specify_async_loop_in_child_thread": (
        True, "the given loop is run in a child thread only if it is not already running when consume() "
              "starts; to run it yourself, start it (loop.run_forever in your thread) before consume()"),
    "schedule_tasks_on_main_thread": (False, "consume() always dispatches on background threads and returns; "
                                      "block the main thread with run_forever() or ctrl_c_recv()"),
    "delay_task_apscheduler_jobstores_kind": (
        "redis", "delayed messages (countdown / eta) need no APScheduler job store: the broker delays them "
                 "natively, or the consumer holds them unacked until due"),
    "booster_registry_name": ("booster_registry_default", "there is one booster registry per process "
                              "(BoostersManager); the name is ignored"),
    "is_fake_booster": (False, "boosters without a function are made with PublisherParams / "
                        "BoostersManager.get_cross_project_publisher"),
    "auto_generate_info": ({}, "the value is informational only and is not read"),
}
_compat_warned: set[str] = set()
_compat_warned_lock = threading.Lock()


def _warn_compat_fields(params: "BoosterParams") -> None:
    """One warning per field per process for an original-funboost field set to a value this project
    does not act on."""
    for name, (neutral, instead) in _COMPAT_FIELD_NOTES.items():
        if getattr(params, name) == neutral:  # set in the call or as a subclass default
            continue
        if name == "publisher_override_cls" and str(params.broker_kind).strip().lower() == "empty":
            continue  # the EMPTY kind is made of the override classes (funboost.custom_broker)
        with _compat_warned_lock:
            if name in _compat_warned:
                continue
            _compat_warned.add(name)
        warnings.warn(f"BoosterParams.{name} (original funboost) is accepted but not used here: {instead}.",
                      FunboostCompatWarning, stacklevel=2)


# keys of the original's broker_exclusive_config that this project's kinds have no option for -> what
# happens instead. A kind whose options model knows the key (rabbitmq's "x-max-priority") validates it as usual.
_ORIGINAL_EXCLUSIVE_KEYS: dict[str, str] = {
    "pull_msg_batch_size": "the engine sizes the batches it fetches from its free capacity (concurrent_num); for "
                           "strict fairness use concurrent_mode=SINGLE_THREAD",
    "redis_bulk_push": "publish_mode='pipelined' sends pushes in batches",
    "x-max-priority": "priorities are 0-9 on the redis priority kind, without a declaration",
    "ack_timeout": "the unacknowledged messages of a dead consumer come back through heartbeats (reclaim_interval)",
    "ultra_fast_mode": "the memory kind has no reduced mode",
    "maxsize": "the memory queue is unbounded",
    "group": "the kind names its own consumer group",
}
_exclusive_warned: set[tuple[str, str]] = set()


def _drop_original_exclusive_keys(broker_cls: Any, raw: dict) -> dict:
    """``raw`` without the original's keys the kind has no option for, with one warning per (kind, key)."""
    model = getattr(broker_cls, "options_model", None)
    known: set[str] = set()
    for name, field in (getattr(model, "model_fields", {}) or {}).items():
        known.add(name)
        choices = getattr(getattr(field, "validation_alias", None), "choices", None) or ()
        known.update(c for c in choices if isinstance(c, str))
    dropped = [k for k in raw if k in _ORIGINAL_EXCLUSIVE_KEYS and k not in known]
    for key in dropped:
        with _compat_warned_lock:
            if (broker_cls.kind, key) in _exclusive_warned:
                continue
            _exclusive_warned.add((broker_cls.kind, key))
        warnings.warn(f"broker_exclusive_config[{key!r}] (original funboost) is accepted but not used by kind "
                      f"{broker_cls.kind!r}: {_ORIGINAL_EXCLUSIVE_KEYS[key]}.", FunboostCompatWarning, stacklevel=3)
    return {k: v for k, v in raw.items() if k not in dropped} if dropped else raw


def _check_broker_options(broker_cls: Any, raw: dict) -> None:
    """``broker_exclusive_config`` against the kind's options model, its errors named as that setting's (a
    bare pydantic error read like a BoosterParams field)."""
    from pydantic import ValidationError
    try:
        broker_cls.parse_options(raw)
    except ValidationError as exc:
        model = getattr(broker_cls, "options_model", None)
        valid = sorted(getattr(model, "model_fields", {}) or {})
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err.get("loc", ()))
            if err.get("type") == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            elif key:
                problems.append(f"{key!r}: {err.get('msg')}")
            else:  # a model-level validator: no single key to name
                problems.append(str(err.get("msg")))
        raise ValueError(f"broker_exclusive_config of kind {broker_cls.kind!r}: {'; '.join(problems)} "
                         f"(valid keys: {', '.join(valid) or 'none'})") from None


class BoosterParams(BaseModel, metaclass=_DefaultsOverrideMeta):
    """Everything that configures one queue's publisher and consumer. Also usable as a decorator."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=False)

    # ---- broker / identity
    queue_name: str
    broker_kind: str = BrokerEnum.SQLITE_QUEUE
    broker_exclusive_config: dict[str, Any] = Field(default_factory=dict)
    project_name: Optional[str] = None
    booster_group: Optional[str] = None
    state_backend: Optional[str] = None  # None: FUNBOOST_STATE_BACKEND env var, else "sqlite"

    # ---- publishing (see funboost.publishing and docs/usage.md "Publish modes")
    # "confirmed": push returns once the broker has the message (concurrent pushes share confirmations);
    # "pipelined": push returns at once, messages leave in batches within the window below
    publish_mode: Literal["confirmed", "pipelined"] = "confirmed"
    publish_window_ms: float = Field(5.0, gt=0, le=60_000)
    publish_window_max: int = Field(1000, ge=1)
    publish_retry_times: int = Field(3, ge=0)

    # ---- concurrency
    concurrent_mode: str = ConcurrentModeEnum.THREADING
    concurrent_num: int = 50
    specify_concurrent_pool: Any = None
    specify_async_loop: Any = None
    prefetch_count: Optional[int] = None  # None: a little more than the free capacity of the pool

    # ---- rate control / windows
    qps: Optional[float] = None
    is_using_distributed_frequency_control: bool = False
    allow_run_time_cron: Optional[str] = None
    # the original's older window (it dropped the fields for allow_run_time_cron; here both work): with
    # the flag on, no message starts between these two local times of day (a start after the end spans midnight)
    is_do_not_run_by_specify_time_effect: bool = False
    do_not_run_by_specify_time: tuple[str, str] = ("10:10:00", "23:20:00")

    # ---- reliability
    max_retry_times: int = Field(3, ge=0)
    is_using_advanced_retry: bool = False
    advanced_retry_config: AdvancedRetryConfig = Field(default_factory=AdvancedRetryConfig)
    is_push_to_dlx_queue_when_retry_max_times: bool = False
    max_requeue_times: int = 100  # guard against endless ExceptionForRequeue loops
    function_timeout: Optional[float] = None
    is_support_remote_kill_task: bool = False
    consuming_function_decorator: Optional[Callable] = None

    # ---- filtering / expiry
    do_task_filtering: bool = False
    task_filtering_expire_seconds: float = 0
    msg_expire_seconds: Optional[float] = None

    # ---- lifecycle
    is_auto_start_consuming_message: bool = False

    # ---- results
    is_using_rpc_mode: bool = False
    rpc_result_expire_seconds: float = 1800
    rpc_timeout: float = 1800
    function_result_status_persistence_conf: FunctionResultStatusPersistenceConfig = Field(
        default_factory=FunctionResultStatusPersistenceConfig)
    user_custom_record_process_info_func: Optional[Callable] = None
    is_send_consumer_heartbeat_to_redis: bool = False  # kept for compatibility; heartbeats always go
    # to the state backend

    # ---- logging
    log_level: int = logging.INFO
    logger_prefix: str = ""
    logger_name: str = ""
    create_logger_file: bool = False
    log_filename: Optional[str] = None
    log_to_console: bool = True
    is_show_message_get_from_broker: bool = False
    is_print_detail_exception: bool = True
    publish_msg_log_use_full_msg: bool = False
    stats_log_interval: float = 10.0

    # ---- shutdown: on SIGTERM / SIGINT running tasks get this long to finish (env FUNBOOST_SHUTDOWN_TIMEOUT)
    shutdown_timeout: float = Field(default_factory=lambda: _default_shutdown_timeout())

    # ---- misc
    user_options: dict[str, Any] = Field(default_factory=dict)
    should_check_publish_func_params: bool = True
    manual_func_input_params: dict[str, Any] = Field(default_factory=lambda: {
        "is_manual_func_input_params": False, "must_arg_name_list": [], "optional_arg_name_list": []})
    consuming_function_kind: Optional[str] = None
    consuming_function: Optional[Callable] = None
    consuming_function_raw: Optional[Callable] = None
    consuming_function_name: str = ""

    # ---- fields of the original funboost 55.0 kept so its code validates unchanged. Those whose concept
    # has no equivalent here warn once per process when set (see _warn_compat_fields and
    # docs/migrating.md); consumer_override_cls is implemented (funboost.compat.AbstractConsumer).
    consumer_override_cls: Optional[type] = None
    publisher_override_cls: Optional[type] = None
    is_auto_start_specify_async_loop_in_child_thread: bool = True
    schedule_tasks_on_main_thread: bool = False
    delay_task_apscheduler_jobstores_kind: str = "redis"
    booster_registry_name: str = "booster_registry_default"
    is_fake_booster: bool = False
    auto_generate_info: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _map_deprecated_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _DEPRECATED_KEYS.items():
                if old in data:
                    warnings.warn(f"BoosterParams: {old!r} is deprecated, use {new!r}",
                                  DeprecationWarning, stacklevel=4)
                    data = dict(data)
                    data.setdefault(new, data.pop(old))
            if "retry_interval" in data:  # an earlier original's fixed pause between retries
                data = dict(data)
                interval = data.pop("retry_interval")
                if interval and not data.get("is_using_advanced_retry"):
                    warnings.warn(f"BoosterParams: 'retry_interval' is an earlier original funboost field; mapped to "
                                  f"is_using_advanced_retry=True with a fixed {interval}s pause between retries "
                                  f"(advanced_retry_config)", FunboostCompatWarning, stacklevel=4)
                    data["is_using_advanced_retry"] = True
                    data["advanced_retry_config"] = {"retry_mode": "sleep", "retry_base_interval": interval,
                                                     "retry_multiplier": 1.0, "retry_max_interval": interval}
        return data

    @field_validator("do_not_run_by_specify_time")
    @classmethod
    def _day_times(cls, v: tuple[str, str]) -> tuple[str, str]:
        for t in v:
            try:
                _dt.datetime.strptime(t, "%H:%M:%S")
            except (TypeError, ValueError):
                raise ValueError(f"do_not_run_by_specify_time: {t!r} is not a time of day 'HH:MM:SS'") from None
        return v

    @field_validator("concurrent_mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> str:
        return _normalize_mode(v)

    @field_validator("broker_kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        # the original's register_custom_broker examples name their kinds with numbers (101, 102 ...)
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("queue_name must be a non-empty string")
        return v

    @field_validator("qps")
    @classmethod
    def _qps(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and v <= 0:
            return None  # 0 / negative mean "no limit", as in the original
        if v is not None and not v < float("inf"):  # NaN, infinity: no rate can be kept
            raise ValueError(f"qps must be a finite number (None or 0: no limit), got {v!r}")
        return v

    @model_validator(mode="after")
    def _derived(self):
        _warn_compat_fields(self)
        if self.concurrent_mode == "single_thread":
            object.__setattr__(self, "concurrent_num", 1)
        elif self.qps and "concurrent_num" not in self.model_fields_set and self.concurrent_num == 50:
            # the pool grows on demand: allow enough workers to hold the rate for slow functions
            object.__setattr__(self, "concurrent_num", 500)
        if self.concurrent_num < 1:
            raise ValueError("concurrent_num must be >= 1")
        conf = self.function_result_status_persistence_conf
        if conf.table_name is None:
            # a copy: one config object may be shared by several boosters, each with its own table
            object.__setattr__(self, "function_result_status_persistence_conf",
                               conf.model_copy(update={"table_name": self.queue_name}))
        # the kind must exist and its options must validate, at decoration time
        from funboost.plugins.manager import resolve_broker_kind
        broker_cls = resolve_broker_kind(self.broker_kind)
        defaults = _BROKER_OPTIONS_DEFAULTS.get(broker_cls)
        if defaults:
            object.__setattr__(self, "broker_exclusive_config", {**defaults, **self.broker_exclusive_config})
        cleaned = _drop_original_exclusive_keys(broker_cls, self.broker_exclusive_config)
        if cleaned is not self.broker_exclusive_config:
            object.__setattr__(self, "broker_exclusive_config", cleaned)
        _check_broker_options(broker_cls, self.broker_exclusive_config)
        if self.publish_mode == "pipelined" and not broker_cls.capabilities.pipelined_publish:
            raise ValueError(f"publish_mode='pipelined' is offered by the broker kinds that declare "
                             f"Capabilities.pipelined_publish (see `funboost brokers`); {broker_cls.kind!r} does not, "
                             f"so its pushes stay confirmed one by one (push_many sends batches)")
        return self

    # ---- use as a decorator:  @BoosterParams(queue_name=...)
    if TYPE_CHECKING:  # an ``async def`` gives an AsyncBooster (see funboost.booster.boost)
        @overload
        def __call__(self, func: "Callable[_P, Coroutine[Any, Any, _R]]") -> "AsyncBooster[_P, _R]": ...

        @overload
        def __call__(self, func: "Callable[_P, _R]") -> "Booster[_P, _R]": ...

    def __call__(self, func: "Callable[_P, _R]") -> "Booster[_P, _R]":  # type: ignore[misc]  # see the overloads
        from funboost.booster import Booster
        return Booster(self, func)

    def broker_class(self):
        from funboost.plugins.manager import resolve_broker_kind
        return resolve_broker_kind(self.broker_kind)


class PublisherParams(BoosterParams):
    """Parameters for publishing to a queue without a local function (cross-project publishing)."""

    clear_queue_within_init: bool = False
    should_check_publish_func_params: bool = False


class TaskOptions(BaseModel):
    """Per-message options, copied into the envelope's ``extra`` (non-None fields only)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    task_id: Optional[str] = None
    publish_time: Optional[float] = None
    publish_time_format: Optional[str] = None
    function_timeout: Optional[float] = None
    max_retry_times: Optional[int] = None
    is_print_detail_exception: Optional[bool] = None
    msg_expire_seconds: Optional[float] = None
    is_using_rpc_mode: Optional[bool] = None
    countdown: Optional[float] = None
    eta: Optional[Union[_dt.datetime, str, float]] = None
    misfire_grace_time: Optional[float] = None
    priority: Optional[int] = None
    key: Optional[str] = None  # ordering / partition key (kafka)
    user_extra_info: Optional[dict] = None
    other_extra_params: Optional[dict] = None
    do_task_filtering: Optional[bool] = None
    filter_str: Optional[str] = None
    otel_context: Optional[dict] = None

    @model_validator(mode="after")
    def _check(self):
        if self.countdown is not None and self.eta is not None:
            raise ValueError("TaskOptions: set countdown or eta, not both")
        if self.countdown is not None and self.countdown < 0:
            raise ValueError("TaskOptions: countdown must be >= 0")
        # the bounds the consumer applies to a message's options (a negative function_timeout was sent, then
        # dead-lettered as malformed by the consumer, and its RPC caller waited out the timeout)
        try:
            check_options(self.to_extra())
        except MalformedMessage as exc:
            raise ValueError(str(exc).replace("'extra.", "TaskOptions '", 1)) from None
        return self

    def eta_timestamp(self, publish_time: float) -> Optional[float]:
        if self.countdown is not None:
            return publish_time + float(self.countdown)
        return eta_to_timestamp(self.eta)

    def to_extra(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if isinstance(out.get("eta"), _dt.datetime):
            out["eta"] = out["eta"].isoformat()
        other = out.get("other_extra_params")
        if other and "priroty" in other and "priority" not in out:  # the original's spelling
            out["priority"] = other["priroty"]
        return out
