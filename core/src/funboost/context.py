"""``fct``: the current task's context, readable inside the task function (sync or async, and inside
the threads funboost starts for timeouts)."""
from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

_current_task: contextvars.ContextVar[Optional["FctContext"]] = contextvars.ContextVar(
    "funboost_current_task", default=None)


@dataclass
class FctContext:
    queue_name: str
    task_id: str
    function_params: dict
    full_msg: dict
    attempt: int = 1
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("funboost"))
    function_result_status: Any = None

    @property
    def extra(self) -> dict:
        return self.full_msg.get("extra", {})


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

    def __repr__(self) -> str:
        return f"<fct {_current_task.get()!r}>"


fct = _CurrentTaskProxy()
funboost_current_task = fct


def set_current_task(ctx: Optional[FctContext]) -> contextvars.Token:
    return _current_task.set(ctx)


def reset_current_task(token: contextvars.Token) -> None:
    _current_task.reset(token)
