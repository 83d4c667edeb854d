"""The registry of boosters by queue name (``BoostersManager``), and helpers to consume several queues.

The decorator registers every booster here; the CLI, multi-process consuming, scheduled jobs and
unpickling find boosters by queue name through it."""
from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any, Optional

from funboost import records as _records
from funboost.params import BoosterParams, TaskOptions

logger = logging.getLogger("funboost.registry")

if TYPE_CHECKING:  # pragma: no cover
    from funboost.booster import Booster
    from funboost.result import AsyncResult


class BoostersManager:
    """Registry of boosters by queue name, and helpers to consume several queues."""

    _boosters: "dict[str, Booster[Any, Any]]" = {}
    _lock = threading.Lock()

    @classmethod
    def register_booster(cls, booster: "Booster[Any, Any]") -> None:
        """Bind ``booster.queue_name`` to this booster (the decorator calls it)."""
        with cls._lock:
            old = cls._boosters.get(booster.queue_name)
            if old is not None and old.func is not booster.func and old.func_name != booster.func_name:
                booster.logger.warning("queue %r was bound to %s and is now bound to %s", booster.queue_name,
                                       old.func_name, booster.func_name)
            cls._boosters[booster.queue_name] = booster

    @classmethod
    def regist_booster(cls, booster: "Booster[Any, Any]") -> None:
        """Deprecated spelling of :meth:`register_booster` (the original funboost's name)."""
        warnings.warn("BoostersManager.regist_booster is deprecated; use register_booster",
                      DeprecationWarning, stacklevel=2)
        cls.register_booster(booster)

    @classmethod
    def get_booster(cls, queue_name: str, import_module: Optional[str] = None) -> "Booster[Any, Any]":
        b = cls._boosters.get(queue_name)
        if b is None and import_module:
            import importlib
            importlib.import_module(import_module)
            b = cls._boosters.get(queue_name)
        if b is None:
            raise KeyError(f"no booster for queue {queue_name!r}; known queues: {sorted(cls._boosters)}")
        return b

    @classmethod
    def get_or_create_booster_by_queue_name(cls, queue_name: str) -> "Booster[Any, Any]":
        return cls.get_booster(queue_name)

    @classmethod
    def build_booster(cls, params: BoosterParams) -> "Booster[Any, Any]":
        """Create a booster without the decorator (dynamic queues)."""
        if params.consuming_function is None:
            raise ValueError("build_booster needs BoosterParams(consuming_function=...)")
        from funboost.booster import Booster
        existing = cls._boosters.get(params.queue_name)
        if existing is not None and existing.func is params.consuming_function:
            return existing
        return Booster(params, params.consuming_function)

    @classmethod
    def get_cross_project_publisher(cls, params: BoosterParams) -> "Booster[Any, Any]":
        """A publisher for a queue whose function lives elsewhere (arguments are not checked)."""
        def _remote(**kwargs: Any) -> None:
            raise RuntimeError("this booster only publishes; its function runs in another project")
        from funboost.booster import Booster
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
    def all_boosters(cls) -> "list[Booster[Any, Any]]":
        return list(cls._boosters.values())

    @classmethod
    def get_all_queues(cls) -> list[str]:
        return sorted(cls._boosters)

    show_all_queues = get_all_queues

    @classmethod
    def show_all_boosters(cls) -> None:
        for name, booster in sorted(cls._boosters.items()):
            logger.info("booster %s: %r", name, booster)

    @classmethod
    def get_boost_params(cls, queue_name: str) -> BoosterParams:
        return cls.get_booster(queue_name).params

    @classmethod
    def get_all_queue_name__boost_params_unstrict_dict(cls) -> dict[str, dict]:
        """Each queue's parameters as a JSON-able dict (objects shown by their repr), as the original's."""
        def plain(v: Any) -> Any:
            if v is None or isinstance(v, (str, int, float, bool)):
                return v
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return repr(v)
        return {name: plain(b.params.model_dump()) for name, b in sorted(cls._boosters.items())}

    @classmethod
    def push(cls, queue_name: str, *args: Any, **kwargs: Any) -> "AsyncResult[Any]":
        return cls.get_booster(queue_name).push(*args, **kwargs)

    @classmethod
    def publish(cls, queue_name: str, msg: dict, task_id: Optional[str] = None,
                task_options: Optional[TaskOptions] = None) -> "AsyncResult[Any]":
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


def _function_name_of(queue_name: str) -> Optional[str]:
    return getattr(BoostersManager._boosters.get(queue_name), "func_name", None)


_records.function_name_of = _function_name_of  # FunctionResultStatus.function (the original's field)
