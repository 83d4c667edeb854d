"""``fct``: the current task's context, readable inside the task function (sync or async, and inside
the threads funboost starts for timeouts)."""
from __future__ import annotations

import contextvars
import logging
from typing import Any, Optional

_current_task: contextvars.ContextVar[Optional["FctContext"]] = contextvars.ContextVar(
    "funboost_current_task", default=None)


class FctContext:
    """What ``fct`` shows inside a running task. One per task run, so a slotted class, not a dataclass."""

    __slots__ = ("queue_name", "task_id", "function_params", "full_msg", "attempt", "logger",
                 "function_result_status")

    def __init__(self, queue_name: str, task_id: str, function_params: dict, full_msg: dict, attempt: int = 1,
                 logger: Optional[logging.Logger] = None, function_result_status: Any = None) -> None:
        self.queue_name = queue_name
        self.task_id = task_id
        self.function_params = function_params
        self.full_msg = full_msg
        self.attempt = attempt
        self.logger = logger if logger is not None else logging.getLogger("funboost")
        self.function_result_status = function_result_status

    @property
    def extra(self) -> dict:
        return self.full_msg.get("extra", {})

    def __repr__(self) -> str:
        return f"FctContext(queue_name={self.queue_name!r}, task_id={self.task_id!r}, attempt={self.attempt})"


class _CurrentTaskProxy:
    """Attribute access is forwarded to the running task's FctContext."""

    def _ctx(self) -> FctContext:
        ctx = _current_task.get()
        if ctx is None:
            raise RuntimeError("fct is only available inside a function run by a funboost consumer")
        return ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx(), name)

    def get(self) -> Optional[FctContext]:
        return _current_task.get()

    def __call__(self) -> "_CurrentTaskProxy":
        """``funboost_current_task()``: the original's function form, returning the same proxy as ``fct``."""
        return self

    def __repr__(self) -> str:
        return f"<fct {_current_task.get()!r}>"


fct = _CurrentTaskProxy()
funboost_current_task = fct


# the context variable's own methods (C), not wrappers: the runner calls both once per task
set_current_task = _current_task.set  # (ctx) -> token
reset_current_task = _current_task.reset  # (token) -> None
