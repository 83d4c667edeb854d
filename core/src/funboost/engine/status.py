"""FunctionResultStatus: the record of one task's run (attempts, result or error, timing, where)."""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Optional

_HOST = socket.gethostname()
_PID = [os.getpid()]  # refreshed in forked children; os.getpid() per record showed in profiles
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))

_current_thread = threading.current_thread


_FIELDS = ("queue_name", "task_id", "params", "publish_time", "success", "result", "exception", "exception_type",
           "exception_msg", "run_times", "run_status", "time_start", "time_end", "time_cost", "host", "pid",
           "thread", "timed_out", "user_context")


class FunctionResultStatus:
    """The record of one task run. Fields (all in ``to_dict()``): queue_name, task_id, params,
    publish_time, success, result, exception, exception_type, exception_msg, run_times, run_status
    (running | finish | requeued | dead_lettered | filtered | expired | killed), time_start, time_end,
    time_cost, host, pid, thread, timed_out, user_context.

    One is made for every task, so ``__init__`` sets only what differs per task; the other fields start
    as class-level defaults (immutable values) until a run changes them. The result lives in a slot, out
    of the instance ``__dict__``: the status saver then hands ``__dict__`` itself to the state backend (no
    copy per record) and the result is only added when results are saved."""

    __slots__ = ("_result", "__dict__")

    success = False
    exception: Optional[str] = None
    exception_type: Optional[str] = None
    exception_msg: Optional[str] = None
    run_times = 0
    run_status = "running"
    time_end: Optional[float] = None
    time_cost: Optional[float] = None
    timed_out = False

    def __init__(self, queue_name: str, task_id: str, params: dict, publish_time: Optional[float] = None,
                 **fields: Any) -> None:
        self._result: Any = None
        self.queue_name = queue_name
        self.task_id = task_id
        self.params = params
        self.publish_time = publish_time
        self.time_start = time.time()
        self.host = _HOST
        self.pid = _PID[0]
        self.thread = _current_thread().name
        self.user_context: dict = {}
        if fields:  # from_dict / tests: any other field by name
            for k, v in fields.items():
                setattr(self, k, v)

    @property
    def result(self) -> Any:
        return self._result

    @result.setter
    def result(self, value: Any) -> None:
        self._result = value

    def finish(self) -> None:
        self.time_end = t = time.time()
        self.time_cost = round(t - self.time_start, 6)
        if self.run_status == "running":
            self.run_status = "finish"

    def set_error(self, exc: BaseException) -> None:
        self.exception_type = type(exc).__name__
        self.exception_msg = str(exc)
        self.exception = f"{self.exception_type}: {self.exception_msg}"

    def to_dict(self) -> dict:
        """Every field; a shallow copy (nested dicts copied one level), never a deep copy."""
        d = {**_DEFAULTS, **self.__dict__, "result": self._result}
        if isinstance(self.params, dict):
            d["params"] = dict(self.params)
        d["user_context"] = dict(self.user_context)
        return d

    def record(self, with_result: bool = True) -> dict:
        """The stored form of a *final* status: the fields that differ from their defaults (readers fill
        the rest in with :func:`complete_record`), sharing this object's dicts. Without ``with_result`` it
        is the instance ``__dict__`` itself: nothing is copied."""
        if with_result and self._result is not None:
            return {**self.__dict__, "result": self._result}
        return self.__dict__

    @classmethod
    def from_dict(cls, d: dict) -> "FunctionResultStatus":
        known = {k: d[k] for k in _FIELDS if k in d}
        return cls(**known)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FunctionResultStatus):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in _FIELDS)

    def __repr__(self) -> str:
        return (f"FunctionResultStatus(queue_name={self.queue_name!r}, task_id={self.task_id!r}, "
                f"run_status={self.run_status!r}, success={self.success!r}, run_times={self.run_times!r})")


# the value of every field a stored record may leave out (see FunctionResultStatus.record)
_DEFAULTS: dict = {"result": None, **{k: getattr(FunctionResultStatus, k) for k in _FIELDS
                                      if k != "result" and hasattr(FunctionResultStatus, k)}}


def complete_record(rec: dict) -> dict:
    """A stored status record with every field: those it left out at their default values."""
    if len(rec) >= len(_FIELDS):
        return rec
    return {**_DEFAULTS, **rec}
