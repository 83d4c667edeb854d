"""FunctionResultStatus: the record of one task's run (attempts, result or error, timing, where)."""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

_HOST = socket.gethostname()
_PID = [os.getpid()]  # refreshed in forked children; os.getpid() per record showed in profiles
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


@dataclass
class FunctionResultStatus:
    queue_name: str
    task_id: str
    params: dict
    publish_time: Optional[float] = None
    success: bool = False
    result: Any = None
    exception: Optional[str] = None
    exception_type: Optional[str] = None
    exception_msg: Optional[str] = None
    run_times: int = 0
    run_status: str = "running"  # running | finish | requeued | dead_lettered | filtered | expired | killed
    time_start: float = field(default_factory=time.time)
    time_end: Optional[float] = None
    time_cost: Optional[float] = None
    host: str = _HOST
    pid: int = field(default_factory=lambda: _PID[0])
    thread: str = field(default_factory=lambda: threading.current_thread().name)
    timed_out: bool = False
    user_context: dict = field(default_factory=dict)

    def finish(self) -> None:
        self.time_end = time.time()
        self.time_cost = round(self.time_end - self.time_start, 6)
        if self.run_status == "running":
            self.run_status = "finish"

    def set_error(self, exc: BaseException) -> None:
        self.exception_type = type(exc).__name__
        self.exception_msg = str(exc)
        self.exception = f"{self.exception_type}: {self.exception_msg}"

    def to_dict(self) -> dict:
        # a shallow copy (nested dicts copied one level): dataclasses.asdict deep-copies recursively and
        # cost ~25 us per record on the hot path of every run with status records or RPC on
        d = dict(self.__dict__)
        d["params"] = dict(self.params) if isinstance(self.params, dict) else self.params
        d["user_context"] = dict(self.user_context)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FunctionResultStatus":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
