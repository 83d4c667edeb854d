"""The consumer side of a server transport, without its framing.

* :class:`ServedQueue`: the bounded :class:`~funboost.transport.local_queue.LocalQueue` of one queue whose
  items are ``(envelope dict, PendingCall or None)``; ``fetch`` drains it, the handlers fill it.
* :class:`QueueServer`: the queues one listening server hosts, and its request handlers
  (:meth:`~QueueServer.handle_publish`, :meth:`~QueueServer.handle_call`, :meth:`~QueueServer.stats`,
  :meth:`~QueueServer.purge`). They raise :class:`~funboost.transport.errors.RequestError` subclasses,
  which the framing turns into its statuses. A transport subclasses it to listen (``start`` in its
  ``__init__``, :meth:`~QueueServer.stop`) and to publish per-queue health (:meth:`~QueueServer.queue_state_changed`).
* :class:`ServerRegistry`: one server per (host, port) and process, shared by every broker of the process
  that serves on it, stopped when the last queue is released.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import AbstractSet, Any, Callable, Generic, Optional, Sequence, TypeVar, Union

from funboost.message import loads as _fast_loads
from funboost.plugins.broker import Delivery
from funboost.transport.calls import InlineRunner, PendingCall, encode_status
from funboost.transport.deadlines import DeadlineWatch
from funboost.transport.errors import Backpressure, BadRequest, CallDeadlineExceeded, UnknownQueue
from funboost.transport.local_queue import LocalQueue

logger = logging.getLogger("funboost.transport")

Item = tuple[dict, Optional[PendingCall]]

__all__ = ["ServedQueue", "QueueServer", "ServerRegistry", "parse_envelope", "Item"]


def _deliver(item: Item, tag: int) -> Delivery:
    pending = item[1]
    return Delivery(body=item[0], tag=tag, reply=pending.reply if pending is not None else None)


def _abandoned(item: Item) -> bool:
    pending = item[1]
    return pending is not None and pending.cancelled  # its caller is gone: running it would be wasted work


class ServedQueue(LocalQueue[Item]):
    """The buffer of one queue hosted by a server. ``inline`` is set while an engine consumer that runs
    inline serves this queue (see :class:`~funboost.transport.calls.InlineRunner`)."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity, deliver=_deliver, abandoned=_abandoned)
        self.refs = 0  # brokers of this process that registered it
        self.inline: Optional[InlineRunner] = None
        #: set by the serving consumer: TypeError unless argument names fit its function (ConsumerSetup)
        self.check_arguments: Optional[Callable[[Any], None]] = None

    def check(self, env: dict, index: int = 0) -> dict:
        """``env`` if it is an envelope the consumer can run, else :class:`BadRequest` (a wrong argument
        or a malformed ``extra`` is answered at once, not dead-lettered after the request was accepted)."""
        names: AbstractSet[str] = env.keys()
        if "extra" in names:
            if type(env["extra"]) is not dict:
                raise BadRequest(f"body #{index}: 'extra' must be a JSON object, got "
                                 f"{type(env['extra']).__name__}")
            names = names - {"extra"}
        check = self.check_arguments
        if check is not None:
            try:
                check(names)
            except TypeError as exc:
                raise BadRequest(f"body #{index}: arguments do not fit the function of queue {self.name!r}: "
                                 f"{exc}") from None
        return env

    def finish(self, tags: Sequence[int], failure: Optional[tuple[str, str]] = None) -> None:
        """ack/reject: forget these deliveries. A call whose result was never reported gets ``failure``."""
        for body, pending in self.settle(tags):
            if pending is not None and not pending.done:
                extra = body.get("extra") if type(body) is dict else None
                task_id = extra.get("task_id") if type(extra) is dict else None
                pending.fail(*(failure or ("NoResult", "the consumer finished the task without reporting a result")),
                             task_id=task_id if isinstance(task_id, (str, int)) else None)

    def purge_failing_calls(self) -> int:
        """Drop every ready item; the calls among them fail with ``Purged``. Return how many were dropped."""
        dropped = self.purge()
        for _, pending in dropped:
            if pending is not None:
                pending.fail("Purged", f"queue {self.name!r} was purged before the call ran")
        return len(dropped)


def parse_envelope(body: Union[str, bytes, dict], index: int = 0) -> dict:
    """The envelope dict of one request body; :class:`BadRequest` if it is not a JSON object.

    A dict is taken as already parsed (a framing that decodes a whole batch at once, e.g. a JSON list)."""
    if type(body) is dict:
        return body
    if not isinstance(body, (str, bytes, bytearray, memoryview)):
        raise BadRequest(f"body #{index} is not a JSON object (the funboost envelope), got {type(body).__name__}")
    try:
        obj = _fast_loads(body)  # orjson: ~5x cheaper than json.loads on the hot path
    except ValueError:
        # json accepts what orjson refuses (NaN, Infinity, lone surrogates): only then is the body invalid
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"body #{index} is not valid JSON: {exc}") from None
    if type(obj) is dict or isinstance(obj, dict):
        return obj
    raise BadRequest(f"body #{index} is not a JSON object (the funboost envelope), got {type(obj).__name__}")


class QueueServer:
    """The queues hosted by one listening server, and the framing-free request handlers.

    Subclass it per transport: start listening in ``__init__`` (set :attr:`port` and :attr:`address`),
    stop in :meth:`stop`, and override :meth:`queue_state_changed` to publish health per queue."""

    #: a call without a deadline still ends one day
    max_call_wait: float = 24 * 3600.0

    def __init__(self, config_key: Any = None) -> None:
        #: the options that must match for two brokers to share this server (security, sizes…)
        self.config_key = config_key
        #: copy-on-write: handlers read it without a lock
        self.queues: dict[str, ServedQueue] = {}
        self.port: int = 0
        self.address: str = ""
        self._lock = threading.Lock()
        self._deadlines: Optional[DeadlineWatch] = None  # made at the first call run inline with a deadline

    # ------------------------------------------------------------------ hosting
    def register(self, name: str, capacity: int) -> ServedQueue:
        """Host ``name`` (or add a reference to it); return its buffer."""
        with self._lock:
            q = self.queues.get(name)
            if q is None:
                q = ServedQueue(name, capacity)
                self.queues = {**self.queues, name: q}
            q.refs += 1
        self.queue_state_changed(name, True)
        return q

    def unregister(self, name: str) -> bool:
        """Drop one reference to ``name``; the last one stops hosting it (waiting calls fail with
        ``ConsumerClosed``; accepted messages not run are lost, and logged). Return True when the server
        hosts nothing any more."""
        with self._lock:
            q = self.queues.get(name)
            if q is None:
                return not self.queues
            q.refs -= 1
            if q.refs > 0:
                return False
            self.queues = {k: v for k, v in self.queues.items() if k != name}
            empty = not self.queues
        q.inline = None
        self.queue_state_changed(name, False)
        lost = 0
        for _, pending in q.drain():
            if pending is not None:
                pending.fail("ConsumerClosed", f"the consumer of queue {name!r} stopped")
            else:
                lost += 1
        if lost:
            logger.warning("funboost %s: consumer of %r closed with %d accepted message(s) not run; they are "
                           "lost (a server transport is not persistent)", type(self).__name__, name, lost)
        return empty

    def queue_state_changed(self, name: str, serving: bool) -> None:
        """Hook: ``name`` is now served (or not); a transport updates its health service here."""

    def stop(self, grace: float = 1.0) -> None:
        """Hook: stop listening (called once the last queue was released)."""

    # ------------------------------------------------------------------ handlers
    def queue(self, name: str) -> ServedQueue:
        q = self.queues.get(name)
        if q is None:
            raise UnknownQueue(f"this consumer does not host queue {name!r}")
        return q

    def handle_publish(self, queue_name: str, bodies: Sequence[Union[str, bytes, dict]]) -> int:
        """Accept as many envelopes as the queue's buffer takes; return how many (a prefix of ``bodies``).

        :raises UnknownQueue: not hosted here. :raises BadRequest: a body is not an envelope (nothing is
            accepted). :raises Backpressure: the buffer is full (nothing accepted)."""
        q = self.queue(queue_name)
        if not bodies:
            return 0
        check = q.check
        items = [(check(parse_envelope(b, i), i), None) for i, b in enumerate(bodies)]
        accepted = q.offer(items)
        if accepted == 0:
            raise Backpressure(f"the buffer of queue {queue_name!r} on this consumer is full")
        return accepted

    def handle_call(self, queue_name: str, body: Union[str, bytes, dict], timeout: Optional[float],
                    on_deadline: Optional[Callable[[], None]] = None) -> Optional[str]:
        """Run one call (inline when the consumer allows, else through the buffer) and return the final
        status as JSON text (:func:`~funboost.transport.calls.encode_status`).

        :param timeout: seconds the caller still waits (None = :attr:`max_call_wait`).
        :param on_deadline: for a framing that can answer from another thread: sends its deadline error.
            A call run inline holds this thread until the function returns; with ``on_deadline`` the caller
            still gets its answer at the deadline (from the server's deadline watcher), and this returns None
            when that answer was sent (the framing sends nothing more). Without it, the reply comes when the
            function returns.
        :raises UnknownQueue, BadRequest, Backpressure: as :meth:`handle_publish`.
        :raises CallDeadlineExceeded: no result in time (the call is cancelled: it will not run later)."""
        # the hot path of sync_call: kept flat (each Python call costs several us in situ under load)
        q = self.queues.get(queue_name)
        if q is None:
            q = self.queue(queue_name)  # raises UnknownQueue
        body_dict = q.check(parse_envelope(body))
        pending = PendingCall()
        inline = q.inline
        item = (body_dict, pending)
        if inline is not None and on_deadline is not None and timeout is not None and timeout < self.max_call_wait:
            watch = self._deadlines
            if watch is None:
                with self._lock:
                    watch = self._deadlines = self._deadlines or DeadlineWatch(f"funboost-{type(self).__name__}")
            token = watch.watch(timeout, on_deadline)
            ran = inline.try_run(q, item, pending)
            if not watch.claim(token):
                if not ran:  # (the deadline passed before it could be buffered: it is not buffered now)
                    pending.cancelled = True
                return None  # the watcher answered at the deadline
            if ran and pending.done:
                return encode_status(pending.status)
            # ran but no final status yet (the run ended in a requeue: its copy, back in the buffer, carries
            # this call): wait below for a final run or the deadline; never answer None as a success
        elif inline is None or not inline.try_run(q, item, pending):
            ran = False
        else:
            ran = True
        if not ran:
            if not q.offer((item,)):
                raise Backpressure(f"the buffer of queue {queue_name!r} on this consumer is full")
        if not pending.done:  # run inline, it is already done: no deadline arithmetic, no Event
            if timeout is None or timeout > self.max_call_wait:
                timeout = self.max_call_wait
            if not pending.wait(timeout):
                pending.cancelled = True
                raise CallDeadlineExceeded("the task did not finish before the deadline")
        return encode_status(pending.status)

    def stats(self, queue_name: str) -> tuple[int, int, int]:
        """``(ready, in_flight, capacity)`` of a hosted queue (:class:`UnknownQueue` otherwise)."""
        q = self.queue(queue_name)
        ready, in_flight, _ = q.counts()
        return ready, in_flight, q.capacity or 0

    def purge(self, queue_name: str) -> int:
        """Drop the ready messages of a hosted queue; waiting calls among them fail. Return how many."""
        return self.queue(queue_name).purge_failing_calls()


S = TypeVar("S", bound=QueueServer)


class ServerRegistry(Generic[S]):
    """The servers of one transport in this process, one per (host, port)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._servers: dict[tuple[str, int], S] = {}
        self.lock = threading.Lock()  # also held while a broker registers an extra queue on a server

    def acquire(self, host: str, port: int, config_key: Any, start: Callable[[], S], queue_name: str,
                capacity: int) -> tuple[S, ServedQueue]:
        """Start (once per host/port and process) the server with ``start()`` and host ``queue_name`` on it.

        ``port`` 0 picks a free port once: later brokers with port 0 and the same host share that server.
        :raises ValueError: a server already listens there with another ``config_key``."""
        with self.lock:
            key = (host, port)
            server = self._servers.get(key) if port else None
            if server is None and port == 0:
                server = self._servers.get(key)
            if server is not None and server.config_key != config_key:
                raise ValueError(f"a funboost {self.transport} server already listens on {host}:{port} in this "
                                 "process with other security/size options; use another port")
            if server is None:
                server = start()
                self._servers[(host, server.port)] = server
                if port == 0:
                    self._servers[key] = server  # port 0: brokers sharing these options share this server
            return server, server.register(queue_name, capacity)

    def lookup(self, host: str, port: int) -> Optional[S]:
        """The server of this process listening on (host, port), if any."""
        return self._servers.get((host, port))

    def release(self, server: S, queue_name: str) -> None:
        """Drop one reference to ``queue_name``; stop the server when it hosts nothing any more."""
        with self.lock:
            stop = server.unregister(queue_name)
            if stop:
                for k in [k for k, v in self._servers.items() if v is server]:
                    del self._servers[k]
        if stop:
            server.stop()
            if server._deadlines is not None:
                server._deadlines.close()
