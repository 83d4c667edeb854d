"""Request/response pieces of a server transport: the pending call a handler waits on, the inline runner,
and the status record as it travels in a reply.

A ``sync_call`` request becomes a :class:`PendingCall`; the delivery handed to the engine carries
``PendingCall.reply`` as ``Delivery.reply``, which the engine calls with the final
``FunctionResultStatus``; the handler then answers with :func:`encode_status`; the client turns the
reply back into the result or a :class:`~funboost.transport.errors.RemoteTaskError`
(:func:`decode_status`, :func:`result_of`).
"""
from __future__ import annotations

import json
import logging
import operator
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Optional, Union

from funboost.message import loads as _fast_loads
from funboost.state.base import dumps_state
from funboost.transport.errors import RemoteTaskError

if TYPE_CHECKING:  # pragma: no cover
    from funboost.plugins.host import ConsumerHost
    from funboost.transport.local_queue import LocalQueue

logger = logging.getLogger("funboost.transport")
_HOST = socket.gethostname()

__all__ = ["PendingCall", "InlineRunner", "encode_status", "decode_status", "result_of", "STATUS_FIELDS"]


class PendingCall:
    """A call request waiting for its result. ``reply`` is handed to the engine as ``Delivery.reply``.

    The event is made only when the handler has to wait (a call run inline never needs one)."""

    __slots__ = ("_event", "status", "done", "cancelled")

    def __init__(self) -> None:
        self._event: Optional[threading.Event] = None
        self.status: Any = None
        self.done = False
        self.cancelled = False  # the caller gave up (deadline, cancel): do not run it any more

    def reply(self, status: Any) -> None:
        """Record the final status (the first one wins) and wake the waiting handler."""
        if not self.done:
            self.status = status
            self.done = True  # written before _event is read: see wait()
            ev = self._event
            if ev is not None:
                ev.set()

    def wait(self, timeout: Optional[float]) -> bool:
        """Wait until replied; False if ``timeout`` passed first."""
        if self.done:  # run inline, or already finished: no Event to build (it costs ~4 us)
            return True
        # _event is published before done is read; reply() writes done before reading _event, so one
        # of the two sides always sees the other (CPython runs bytecodes one at a time)
        ev = self._event = threading.Event()
        if self.done:
            return True
        return ev.wait(timeout)

    def fail(self, exception_type: str, message: str, task_id: Union[str, int, None] = None) -> None:
        """Reply with a failure that did not come from the function (dead-lettered as malformed, purged,
        consumer closed…): a status record with every field a caller reads (:data:`STATUS_FIELDS`), the
        function not run."""
        self.reply({"task_id": task_id, "success": False, "result": None, "exception_type": exception_type,
                    "exception_msg": message, "run_times": 0,
                    "run_status": "dead_lettered" if exception_type == "DeadLettered" else "not_run",
                    "time_cost": None, "host": _HOST, "pid": os.getpid(),
                    "exception": f"{exception_type}: {message}"})


class InlineRunner:
    """Runs call requests in the server's handler thread through the engine's ``execute_inline`` (one
    thread hop fewer than buffer -> fetch -> pool -> reply). Each takes one of the consumer's own slots
    (:meth:`ConsumerHost.reserve_slot`): inline calls and the pool's tasks together never exceed
    ``concurrent_num``. With no slot free, or while the consumer may not start a task (paused, stopping,
    outside its run-time window), calls go through the buffer like any message.

    Build it with :meth:`for_consumer`, which returns None when the consumer cannot run inline."""

    def __init__(self, host: "ConsumerHost") -> None:
        self.host = host

    @classmethod
    def for_consumer(cls, host: "ConsumerHost") -> Optional["InlineRunner"]:
        """An inline runner for ``host`` if its concurrency mode runs ``execute_inline`` in the calling
        thread (threading, single_thread) or is ``async`` (``execute_inline`` hands an ``async def``
        function to the consumer's event loop and waits for it in the calling thread: the buffer and the
        dispatch thread, two thread hops, are skipped); None for gevent / eventlet consumers."""
        if not host.runs_inline and host.params.concurrent_mode != "async":
            return None
        return cls(host)

    def try_run(self, queue: "LocalQueue[Any]", item: Any, pending: PendingCall) -> bool:
        """Run ``item`` now in this thread and return True, or return False (the caller buffers it)."""
        host = self.host
        if not host.is_runnable():  # a stopping consumer's execute_inline would not settle the call
            return False
        if not host.reserve_slot():
            return False
        d = queue.track(item)
        try:
            host.execute_inline(d, slot_reserved=True)
        except Exception as exc:  # the runner records task errors itself; this is an engine failure
            logger.exception("funboost transport: inline execution failed")
            pending.fail(type(exc).__name__, str(exc))
            queue.settle([d.tag])
        return True


# the fields of FunctionResultStatus a caller needs; dataclasses.asdict of the whole record costs more
# than the rest of the reply path
STATUS_FIELDS = ("task_id", "success", "result", "exception_type", "exception_msg", "run_times", "run_status",
                 "time_cost", "host", "pid")
_status_values = operator.attrgetter(*STATUS_FIELDS)


def encode_status(status: Any) -> str:
    """JSON text of a call's final status for the reply: a ``FunctionResultStatus`` (its
    :data:`STATUS_FIELDS`), a status dict as is, or any other value as a successful result."""
    if type(status) is dict:
        d = status
    else:
        try:  # a FunctionResultStatus (slotted record): the common case, tried first
            d = dict(zip(STATUS_FIELDS, _status_values(status)))
        except AttributeError:
            if isinstance(status, dict):
                d = status
            elif hasattr(status, "exception_type"):  # a status-like object without some of the fields
                d = {k: getattr(status, k, None) for k in STATUS_FIELDS}
            else:
                d = {"success": True, "result": status}
    # core's encoder for state records: orjson (values JSON cannot hold become their repr), json fallback
    return dumps_state(d)


def decode_status(text: Union[str, bytes]) -> dict:
    """The status dict of a reply written by :func:`encode_status`."""
    try:
        return _fast_loads(text)  # orjson
    except ValueError:  # NaN/Infinity written by a json encoder
        return json.loads(text)


def result_of(status: dict, error: type[RemoteTaskError] = RemoteTaskError) -> Any:
    """The function's result, or raise ``error(status)`` when it failed on the consumer."""
    if status.get("success"):
        return status.get("result")
    raise error(status)
