"""funboost: turn any function into a distributed task with one decorator, on any broker by name."""
from __future__ import annotations

__version__ = "0.1.0"


def _monkey_patch_from_environment() -> None:
    """``FUNBOOST_MONKEY_PATCH=gevent`` / ``eventlet``: patch before anything of funboost (threading, pydantic)
    is imported. For the command line (``funboost -m tasks consume``), which imports funboost before the
    user's module could patch first; a script patches in its own first lines instead."""
    import os
    which = os.environ.get("FUNBOOST_MONKEY_PATCH", "").strip().lower()
    if not which:
        return
    if which == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif which == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    else:
        raise ImportError(f"FUNBOOST_MONKEY_PATCH={which!r}: use 'gevent' or 'eventlet'")


_monkey_patch_from_environment()

from funboost.enums import BrokerEnum, ConcurrentModeEnum, FunctionKind  # noqa: E402
from funboost.exceptions import (
    ExceptionForPushToDlxqueue, ExceptionForPushToDlxQueue, ExceptionForRequeue, ExceptionForRetry,
    FunboostError, FunctionTimeoutError, MalformedMessage, MessagesRefused, PublishArgumentsError, PublishRefused, RpcNotEnabled,
    RpcTimeout, UnknownBrokerKind, BrokerPluginError, TaskKilled,
)
from funboost.params import (
    BoosterParams, FunctionResultStatusPersistanceConfig, FunctionResultStatusPersistenceConfig,
    PublisherParams, TaskOptions,
)
from funboost.booster import Booster, boost, ctrl_c_recv, keep_sleep, run_forever, task_deco
from funboost.registry import BoostersManager
from funboost.enums import RunStatus
from funboost.flags import QueueFlag
from funboost.context import fct, funboost_current_task, FctContext
from funboost.result import AsyncResult, AioAsyncResult, RemoteTaskError
from funboost.plugins.broker import (Broker, BrokerOptions, BrokerUnavailable, Capabilities, Delivery, OutgoingMessage,
                                     QueueSize)
from funboost.plugins.hookspecs import hookimpl
from funboost.records import FunctionResultStatus

__all__ = [
    "boost", "task_deco", "Booster", "BoostersManager", "BoosterParams", "PublisherParams", "TaskOptions",
    "BrokerEnum", "ConcurrentModeEnum", "FunctionKind", "fct", "funboost_current_task", "FctContext",
    "AsyncResult", "AioAsyncResult", "RemoteTaskError", "ctrl_c_recv", "keep_sleep", "run_forever",
    "ExceptionForRetry", "ExceptionForRequeue", "ExceptionForPushToDlxqueue", "ExceptionForPushToDlxQueue",
    "FunboostError", "FunctionTimeoutError", "MalformedMessage", "MessagesRefused", "PublishArgumentsError", "PublishRefused", "RpcNotEnabled",
    "RpcTimeout", "UnknownBrokerKind", "BrokerPluginError", "TaskKilled",
    "FunctionResultStatusPersistenceConfig", "FunctionResultStatusPersistanceConfig",
    "Broker", "BrokerOptions", "BrokerUnavailable", "Capabilities", "Delivery", "OutgoingMessage", "QueueSize", "hookimpl",
    "RunStatus", "QueueFlag", "FunctionResultStatus",
]


# ---- scheduled jobs (imported on first use: APScheduler costs import time that most programs never need)
def __getattr__(name: str):
    if name in ("ApsJobAdder", "push_fun_params_to_broker", "funboost_aps_scheduler"):
        from funboost import timing_job
        return getattr(timing_job, name)
    if name in ("MemoryFunboostPool", "FunboostPool", "FunboostPoolPickleFunc"):
        from funboost import pool
        return getattr(pool, name)
    if name in ("BrokerConnConfig", "FunboostCommonConfig", "show_frame_config"):
        from funboost import funboost_config_deafult
        return getattr(funboost_config_deafult, name)
    if name == "atexit":  # the original's namespace leaks the standard module; code reaches it this way
        import atexit
        return atexit
    if name in _COMPAT_NAMES:  # lazily: funboost.compat imports the engine, which `import funboost` must not
        from funboost import compat
        return getattr(compat, name)
    if name in _ORIGINAL_SUBMODULES:  # ``funboost.constant`` etc. without importing them first
        import importlib
        return importlib.import_module(f"funboost.{name}")
    raise AttributeError(f"module 'funboost' has no attribute {name!r}")


_COMPAT_NAMES = frozenset((
    "AbstractConsumer", "AbstractPublisher", "ActiveCousumerProcessInfoGetter", "BoosterDiscovery",
    "BoosterParamsComplete", "FunboostFileLoggerMixin", "FunboostMetaTypeFileLogger", "HasNotAsyncResult",
    "RemoteTaskKiller", "enable_ctrl_c_quit_on_windows", "flogger", "get_consumer", "get_current_taskid",
    "get_funboost_file_logger", "get_logger", "get_publisher", "nb_print", "register_broker_exclusive_config_default",
    "register_custom_broker", "show_current_threads_num", "wait_for_possible_has_finish_all_tasks_by_conusmer_list",
    "RedisMixin", "ResultFromMongo", "EmptyConsumer", "EmptyPublisher",
))
_ORIGINAL_SUBMODULES = ("constant", "core", "consumers", "publishers", "factories", "utils", "timing_job",
                        "concurrent_pool", "funboost_config_deafult", "set_frame_config", "nb_log", "queues")


__all__ += ["ApsJobAdder", "funboost_aps_scheduler", "MemoryFunboostPool", "FunboostPool", "FunboostPoolPickleFunc",
            "BrokerConnConfig", "FunboostCommonConfig", "show_frame_config", "RedisMixin", "ResultFromMongo",
            *sorted(_COMPAT_NAMES)]  # the original funboost's names (docs/migrating.md)
