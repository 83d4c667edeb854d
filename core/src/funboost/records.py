"""The status-record format: a leaf module that the engine (which writes records) and every state
backend (which stores and reads them) import, so that neither imports the other.

* :class:`FunctionResultStatus`: the record of one task's run;
* the compact stored form (:meth:`FunctionResultStatus.compact`, :data:`COMPACT_FIELDS`,
  :func:`expand_record`) and :class:`StatusBatch`, what the engine hands to
  ``StateBackend.save_status_batch``;
* the state JSON codec (:func:`dumps_state`, :func:`dumps_state_bytes`, :func:`loads_state`).

It imports nothing of funboost but :mod:`funboost.enums`.
"""
from __future__ import annotations

import json as _json
import os
import socket
import threading
import time
from typing import Any, Callable, Optional

from funboost.enums import RunStatus
from funboost.message import has_non_finite_float
from funboost.message import loads as _loads_exact

# the plain str of each RunStatus, looked up per record (Enum.value is a property: slow on the hot path)
PLAIN_RUN_STATUS: dict[str, str] = {s: s.value for s in RunStatus}
_RUNNING, _FINISH = RunStatus.RUNNING.value, RunStatus.FINISH.value

try:  # orjson (a core dependency) is ~10x faster than json for the records written on the hot path
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]


def _orjson_exact(obj: Any, option: int = 0,
                  holds_non_finite: Callable[[Any], bool] = has_non_finite_float) -> Optional[bytes]:
    """orjson's text of ``obj``, or None where it would not be exact: an int beyond 64 bits (refused), a NaN
    or an Infinity (orjson writes null; a result of NaN would come back as None). ``holds_non_finite`` is
    asked only when the text holds a null."""
    try:
        out = _orjson.dumps(obj, default=repr, option=option)
    except (TypeError, _orjson.JSONEncodeError):
        return None
    if b"null" in out and holds_non_finite(obj):
        return None
    return out


def dumps_state(obj: Any) -> str:
    """JSON text for state records; values JSON cannot hold are stored as their ``repr``."""
    if _orjson is not None:
        # plain options first: OPT_NON_STR_KEYS makes every dict slower, and is rarely needed
        out = _orjson_exact(obj)
        if out is None:
            out = _orjson_exact(obj, _orjson.OPT_NON_STR_KEYS)
        if out is not None:
            return out.decode()
    # the slower path: ints beyond 64 bits, NaN / Infinity (written as the stdlib writes them, read back by
    # loads_state)
    try:
        return _json.dumps(obj, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        # keys JSON cannot have (a tuple), a value that contains itself: a record must still be written (one
        # such result lost the whole batch of records and left its RPC caller waiting)
        return _json.dumps(_json_safe(obj, set()), ensure_ascii=False, default=repr)


def _json_safe(obj: Any, seen: set) -> Any:
    """``obj`` with dict keys JSON cannot hold as their ``repr`` and a value met again inside itself as its
    ``repr``; other values are left to ``default=repr``."""
    if isinstance(obj, (dict, list, tuple)):
        if id(obj) in seen:
            return repr(obj)
        seen = seen | {id(obj)}
        if isinstance(obj, dict):
            return {(k if isinstance(k, (str, int, float, bool)) or k is None else repr(k)): _json_safe(v, seen)
                    for k, v in obj.items()}
        return [_json_safe(v, seen) for v in obj]
    return obj


def dumps_state_bytes(obj: Any) -> bytes:
    """:func:`dumps_state` as UTF-8 bytes (orjson's own output: no decode / encode round)."""
    if _orjson is not None:
        out = _orjson_exact(obj)
        if out is not None:
            return out
    return dumps_state(obj).encode()


def loads_state(text: Any) -> Any:
    """Parse what :func:`dumps_state` / :func:`dumps_state_bytes` wrote (exactly: ints beyond 64 bits and
    NaN / Infinity too; see :func:`funboost.message.loads`)."""
    return _loads_exact(text)


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
    (a :class:`~funboost.enums.RunStatus` value, stored as its plain string), time_start, time_end,
    time_cost, host, pid, thread, timed_out, user_context.

    One is made for every task, so ``__init__`` sets only what differs per task; the other fields start
    as class-level defaults (immutable values) until a run changes them. The stored form of a final
    status is :meth:`compact`."""

    __slots__ = ("_result", "__dict__")

    success = False
    exception: Optional[str] = None
    exception_type: Optional[str] = None
    exception_msg: Optional[str] = None
    run_times = 0
    run_status: str = RunStatus.RUNNING.value  # a RunStatus value, kept a plain str: records stay plain JSON
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
        self.thread = _current_thread()._name  # type: ignore[attr-defined]  # Thread.name without the property call
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
        if self.run_status == _RUNNING:
            self.run_status = _FINISH

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

    # ---- the original funboost's names of the same facts: read-only, computed when read, never stored
    @property
    def host_name(self) -> str:
        return self.host

    @property
    def process_id(self) -> int:
        return self.pid

    @property
    def thread_id(self) -> Any:
        """The thread's name here (the original recorded its numeric ident)."""
        return self.thread

    @property
    def host_process(self) -> str:
        return f"{self.host} - {self.pid}"

    @property
    def publish_time_format(self) -> Optional[str]:
        """``publish_time`` as ``'%Y-%m-%d %H:%M:%S'`` in the configured time zone (funboost.timezone)."""
        from funboost.timezone import format_local
        return format_local(self.publish_time)

    publish_time_str = publish_time_format

    @property
    def msg_dict(self) -> dict:
        """The message as the original's consumers saw it: the arguments and an ``extra`` part."""
        params = self.params if isinstance(self.params, dict) else {}
        return {**params, "extra": {"task_id": self.task_id, "publish_time": self.publish_time,
                                    "publish_time_format": self.publish_time_format}}

    @property
    def params_str(self) -> str:
        return _json.dumps(self.params, ensure_ascii=False, default=str)

    @property
    def function(self) -> Optional[str]:
        """The name of the queue's function in this process (None when no booster of it is here)."""
        return function_name_of(self.queue_name)

    @property
    def total_thread(self) -> int:
        return threading.active_count()

    @property
    def script_name(self) -> str:
        import sys
        return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""

    def get_status_dict(self, without_datetime_obj: bool = False) -> dict:
        """The original funboost's name: :meth:`to_dict` plus the original's names of the same facts
        (``host_name``, ``process_id``, ``thread_id``, ``host_process``, ``publish_time_format`` /
        ``publish_time_str``, ``msg_dict``, ``params_str``, ``function``, ``total_thread``, ``script_name``).
        ``without_datetime_obj`` is accepted for the original's signature: no value here is a datetime."""
        d = self.to_dict()
        for name in _ORIGINAL_NAMES:
            d[name] = getattr(self, name)
        return d

    def compact(self, with_result: bool = True) -> tuple:
        """The stored form of a *final* status in the engine's batches: its values in
        :data:`COMPACT_FIELDS` order, without keys, ``time_cost`` (:func:`expand_record` derives it) or the
        trailing fields that are at their defaults (the common case: a success without a saved result)."""
        result = self._result if with_result else None
        if self.exception is None and not self.user_context and not self.timed_out:
            if result is None:
                return (self.task_id, self.time_start, self.time_end, self.run_times, self.success, self.run_status,
                        self.params, self.publish_time, self.thread, self.queue_name, self.host, self.pid)
            return (self.task_id, self.time_start, self.time_end, self.run_times, self.success, self.run_status,
                    self.params, self.publish_time, self.thread, self.queue_name, self.host, self.pid, result)
        return (self.task_id, self.time_start, self.time_end, self.run_times, self.success, self.run_status,
                self.params, self.publish_time, self.thread, self.queue_name, self.host, self.pid, result,
                self.exception, self.exception_type, self.exception_msg, self.timed_out, self.user_context or None)

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


# queue name -> the name of its function in this process; set by funboost.registry (this module stays a leaf)
function_name_of: Callable[[str], Optional[str]] = lambda queue_name: None

_ORIGINAL_NAMES = ("host_name", "process_id", "thread_id", "host_process", "publish_time_format", "publish_time_str",
                   "msg_dict", "params_str", "function", "total_thread", "script_name")

# the value of every field a stored record may leave out (complete_record / expand_record fill them in)
_DEFAULTS: dict = {"result": None, **{k: getattr(FunctionResultStatus, k) for k in _FIELDS
                                      if k != "result" and hasattr(FunctionResultStatus, k)}}


def complete_record(rec: dict) -> dict:
    """A stored status record with every field: those it left out at their default values."""
    if len(rec) >= len(_FIELDS):
        return rec
    return {**_DEFAULTS, **rec}


# The compact record: a JSON array of these fields in this order (FunctionResultStatus.compact), trailing
# fields at their defaults left out. About half the bytes of the same record as an object, and cheaper to
# make and to write: for a trivial task the record is a large share of the whole cost. New fields are
# only ever appended, so an array from an older version stays readable.
COMPACT_FIELDS = ("task_id", "time_start", "time_end", "run_times", "success", "run_status", "params",
                  "publish_time", "thread", "queue_name", "host", "pid", "result", "exception", "exception_type",
                  "exception_msg", "timed_out", "user_context")
_TIME_START, _SUCCESS = 1, 4


def expand_record(raw: Any) -> dict:
    """A stored record (an object, or the compact array) as a dict with every field."""
    if isinstance(raw, dict):
        return complete_record(raw)
    rec = {**_DEFAULTS, **dict(zip(COMPACT_FIELDS, raw))}
    ts, te = rec["time_start"], rec["time_end"]
    rec["time_cost"] = round(te - ts, 6) if ts is not None and te is not None else None
    if rec.get("user_context") is None:
        rec["user_context"] = {}
    return rec


def record_task_id(raw: Any) -> str:
    return raw["task_id"] if isinstance(raw, dict) else raw[0]


def record_time_start(raw: Any) -> float:
    return (raw.get("time_start") if isinstance(raw, dict) else raw[_TIME_START]) or 0.0


def record_success(raw: Any) -> bool:
    return bool(raw.get("success") if isinstance(raw, dict) else raw[_SUCCESS])


_PARAMS, _RESULT = COMPACT_FIELDS.index("params"), COMPACT_FIELDS.index("result")


def _user_values_non_finite(records: Any) -> bool:
    """Whether the arguments or the result of a record holds a NaN / Infinity: the only fields that can (the
    engine's own floats are times). Cheaper than walking whole records, which hold many nulls."""
    for r in records:
        if isinstance(r, dict):
            if has_non_finite_float(r.get("params")) or has_non_finite_float(r.get("result")):
                return True
        elif has_non_finite_float(r[_PARAMS]) or (len(r) > _RESULT and has_non_finite_float(r[_RESULT])):
            return True
    return False


def _records_bytes(obj: Any, one: bool = False) -> bytes:
    """:func:`dumps_state_bytes` of a list of status records (or of ``one``), checking only their user values
    for the NaN / Infinity orjson would write as null."""
    check = (lambda r: _user_values_non_finite((r,))) if one else _user_values_non_finite
    out = _orjson_exact(obj, holds_non_finite=check) if _orjson is not None else None
    return out if out is not None else dumps_state(obj).encode()


class StatusBatch:
    """Final status records of one consumer, in the compact form (tuples from
    :meth:`FunctionResultStatus.compact`, or lists parsed back from JSON; records as dicts, from
    ``save_statuses``, are taken too, one form per batch); what the engine hands to
    :meth:`funboost.state.base.StateBackend.save_status_batch`. A backend takes the form it stores best: ``json`` (the whole
    batch as one JSON array, serialised in one call), ``rows`` (each record's JSON), ``records``,
    ``task_ids`` / ``time_starts``, or ``dicts()`` (every record expanded)."""

    __slots__ = ("records", "_json")

    def __init__(self, records: list) -> None:
        self.records = records
        self._json: Optional[bytes] = None

    @classmethod
    def chunks(cls, records: list, size: int = 1000) -> list["StatusBatch"]:
        return [cls(records[i:i + size]) for i in range(0, len(records), size)]

    def __len__(self) -> int:
        return len(self.records)

    def _dict_records(self) -> bool:
        return bool(self.records) and isinstance(self.records[0], dict)

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _records_bytes(self.records)
        return self._json

    @property
    def rows(self) -> list[bytes]:
        return [_records_bytes(r, one=True) for r in self.records]

    @property
    def task_ids(self) -> list[str]:
        if self._dict_records():
            return [r["task_id"] for r in self.records]
        return [r[0] for r in self.records]

    @property
    def time_starts(self) -> list[float]:
        if self._dict_records():
            return [r.get("time_start") or 0.0 for r in self.records]
        return [r[_TIME_START] or 0.0 for r in self.records]

    @property
    def failures(self) -> int:
        """How many records are not successes (stored with the batch: a search for failures skips the
        batches without any)."""
        if self._dict_records():
            return sum(1 for r in self.records if not r.get("success"))
        return sum(1 for r in self.records if not r[_SUCCESS])

    def dicts(self) -> list[dict]:
        return [expand_record(r) for r in self.records]
