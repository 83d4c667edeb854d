"""Connections shared by the broker instances of one process: a confirming publisher and an admin channel.

pika connections are not thread-safe, so each one here is owned by exactly one thread or one lock:

* :class:`Publisher` runs a ``SelectConnection`` on its own I/O thread. Callers encode a batch's frames
  themselves (:mod:`.frames`, not pika's per-message marshalling), hand the bytes over through
  ``add_callback_threadsafe`` and wait for the publisher confirms, so a batch of N costs one write and
  one round trip, not N, and several publishing threads share one connection with their confirms
  pipelined.
* :class:`ThreadPublisher` keeps one confirm-mode ``BlockingConnection`` per publishing thread
  (``threading.local``) for single messages: no thread hand-off, so one-by-one pushes cost what raw pika
  costs.
* :class:`Admin` is a ``BlockingConnection`` used under a lock for the rare synchronous calls
  (declare, passive declare for sizes, purge). It is reopened on demand: nobody drives its heartbeats,
  so the server may close it while idle, which is harmless.

Both are pooled per (process id, URL): a forked child never reuses its parent's socket.
"""
from __future__ import annotations

import collections
import copy
import logging
import os
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import pika
import pika.exceptions

from funboost.process_local import ProcessLocal, ProcessLocalDict
from funboost.redact import shown_url
from funboost.utils.private_random import rng

from .frames import PublishFrames

logger = logging.getLogger("funboost.rabbitmq")

T = TypeVar("T")

# Errors after which a connection or channel is gone and must be reopened.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


def describe_error(exc: BaseException) -> str:
    """A readable reason for an error. pika's connection errors wrap the cause (``ConnectionRefusedError``,
    a DNS failure, a timeout) in one or two layers and their ``str()`` is empty: report the cause."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "exception", None)  # pika's AMQPConnectorPhaseErrorBase
        if inner is None and getattr(exc, "exceptions", None):  # AMQPConnectionWorkflowFailed
            inner = exc.exceptions[-1]  # type: ignore[attr-defined]
        if inner is None and len(exc.args) == 1 and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else repr(exc)


class TopologyError(pika.exceptions.ChannelClosedByBroker):
    """A queue cannot be used as configured (it exists with other arguments, or ``passive`` and it does not
    exist). Retrying cannot help: the configuration or the queue must change."""


def bounded_parameters(params: pika.URLParameters, deadline: Optional[float]) -> pika.URLParameters:
    """``params`` with connect timeouts that end by ``deadline`` (an unreachable host would otherwise take
    pika's socket timeout of 10 s per attempt, past a short ``publish_timeout``)."""
    if deadline is None:
        return params
    left = max(0.5, deadline - time.monotonic())
    if params.stack_timeout is not None and params.stack_timeout <= left:
        return params  # pika's own bound on the whole connect ends in time
    bounded = copy.copy(params)
    bounded.stack_timeout = left
    bounded.socket_timeout = min(params.socket_timeout or left, left)
    return bounded


def connection_parameters(url: str, heartbeat: int, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    if "heartbeat=" not in url:
        params.heartbeat = heartbeat
    params.client_properties = {"connection_name": name, "product": "funboost-rabbitmq"}
    return params


def backoff_delays(max_delay: float) -> "collections.abc.Iterator[float]":
    """0.2 s, doubling, capped, with jitter so that many consumers do not reconnect in lockstep."""
    delay = 0.2
    while True:
        yield delay * (0.75 + rng.random() / 2)
        delay = min(max_delay, delay * 2)


class PublishItem:
    """One message for pika's ``basic_publish`` (the one-by-one path, :class:`ThreadPublisher`)."""

    __slots__ = ("exchange", "routing_key", "body", "properties")

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties):
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties


# One message of a batch: (exchange, routing key, body, properties encoded by frames.encode_properties /
# frames.FixedProperties). A plain tuple: no per-message object beyond it on the batch path.
WireMessage = tuple[str, str, bytes, bytes]


class _Batch:
    """A batch being published; ``pending`` are the indexes of its messages not yet confirmed."""

    __slots__ = ("messages", "pending", "done", "error", "nacked", "generation")

    def __init__(self, messages: Sequence[WireMessage]) -> None:
        self.messages = messages
        self.pending = set(range(len(messages)))
        self.done = threading.Event()
        self.error: Optional[str] = None
        self.nacked = False
        self.generation = -1


class _Segment:
    """Publishes of one batch written in one go: they got the consecutive delivery tags ``first ..
    first + len(indexes) - 1``; ``indexes`` (a range or a list) maps tag - first to the message's index in
    the batch. Tags below ``first + pos`` are settled; ``settled`` holds the tags above that which were
    settled one by one out of order (rare: RabbitMQ mostly confirms in order, often ``multiple``)."""

    __slots__ = ("first", "indexes", "batch", "pos", "settled")

    def __init__(self, first: int, indexes: Sequence[int], batch: _Batch) -> None:
        self.first = first
        self.indexes = indexes
        self.batch = batch
        self.pos = 0
        self.settled: Optional[set[int]] = None


class ConfirmBook:
    """Delivery tags of a confirm-mode channel and the batch messages they stand for.

    The channel numbers publishes 1, 2, 3... from ``confirm.select`` on; :meth:`add` gives the next tags to
    a run of messages. :meth:`confirm` applies a ``basic.ack`` / ``basic.nack`` (``multiple`` = every
    outstanding tag up to ``tag``). Every tag is settled exactly once: a tag nacked on its own is not
    acked by a later ``multiple`` ack, which RabbitMQ does not mean to cover it. Runs on the I/O thread.
    """

    def __init__(self) -> None:
        self.last_tag = 0
        self._segments: "collections.deque[_Segment]" = collections.deque()  # in tag order

    def __len__(self) -> int:
        return len(self._segments)

    def add(self, batch: _Batch, indexes: Sequence[int]) -> None:
        self._segments.append(_Segment(self.last_tag + 1, indexes, batch))
        self.last_tag += len(indexes)

    def confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        segments = self._segments
        if multiple:
            while segments and segments[0].first + segments[0].pos <= tag:
                seg = segments[0]
                end = min(tag - seg.first + 1, len(seg.indexes))  # offsets pos..end-1 are covered
                covered = seg.indexes[seg.pos:end]
                if seg.settled:
                    start = seg.first + seg.pos
                    covered = [i for off, i in enumerate(covered) if start + off not in seg.settled]
                    seg.settled = {t for t in seg.settled if t > tag} or None
                _settle(seg.batch, covered, nack)
                seg.pos = end
                _skip_settled(seg)
                if seg.pos < len(seg.indexes):
                    break
                segments.popleft()
            return
        for seg in segments:
            if tag < seg.first + seg.pos:
                return  # already settled (or never ours)
            offset = tag - seg.first
            if offset >= len(seg.indexes):
                continue
            if offset == seg.pos:
                _settle(seg.batch, (seg.indexes[offset],), nack)
                seg.pos += 1
                _skip_settled(seg)
                if seg.pos == len(seg.indexes):
                    segments.remove(seg)
            else:
                if seg.settled is None:
                    seg.settled = set()
                if tag not in seg.settled:
                    seg.settled.add(tag)
                    _settle(seg.batch, (seg.indexes[offset],), nack)
            return

    def fail_all(self, reason: str) -> None:
        """The channel is gone: its unconfirmed publishes will never be confirmed."""
        for seg in self._segments:
            seg.batch.error = seg.batch.error or reason
            seg.batch.done.set()
        self._segments.clear()

    def reset(self) -> None:
        """A new confirm-mode channel numbers from 1 again."""
        self.fail_all("connection changed")
        self.last_tag = 0


def _skip_settled(seg: _Segment) -> None:
    """Move ``pos`` past tags that were already settled out of order."""
    while seg.settled and seg.first + seg.pos in seg.settled:
        seg.settled.discard(seg.first + seg.pos)
        seg.pos += 1


def _settle(batch: _Batch, indexes: Sequence[int], nack: bool) -> None:
    if nack:
        batch.error = "the broker refused (nacked) a message (e.g. x-overflow=reject-publish)"
        batch.nacked = True
        batch.done.set()
        return
    pending = batch.pending
    pending.difference_update(indexes)
    if not pending:
        batch.done.set()


class PublishError(ConnectionError):
    pass


def _no_wait() -> None:
    return None


class Publisher:
    """One ``SelectConnection`` with a confirm-mode channel, driven by a daemon I/O thread.

    Batches bypass pika's per-message marshalling: the calling thread encodes all frames of a batch into
    one bytes object (:mod:`.frames`), and the I/O thread only numbers them and hands them to the
    connection's output in one write. pika's SelectConnection channel does not count publishes (only its
    BlockingChannel does), so the delivery tags are ours to count: a channel in confirm mode numbers the
    publishes 1, 2, 3... from ``confirm.select`` on, and every publish on this channel goes through
    :meth:`_send`.
    """

    def __init__(self, url: str, heartbeat: int, reconnect_max_delay: float) -> None:
        self.url = url
        self._params = connection_parameters(url, heartbeat, f"funboost-publisher:{os.getpid()}")
        self._max_delay = reconnect_max_delay
        self._ready = threading.Event()
        self._closing = False
        self._conn: Optional[pika.SelectConnection] = None
        self._channel: Any = None
        self.generation = 0  # bumped on every (re)connect; a batch from an older one has failed
        # (generation, encoder for the channel number and frame_max of that connection)
        self._wire: tuple[int, Optional[PublishFrames]] = (0, None)
        self._confirms = ConfirmBook()  # of the current channel
        self.last_error: str = ""
        self.refcount = 0
        self._thread = threading.Thread(target=self._run, name="funboost-rabbitmq-publisher", daemon=True)
        self._thread.start()

    # ----- I/O thread -----
    def _run(self) -> None:
        delays = backoff_delays(self._max_delay)
        while not self._closing:
            opened_at = time.monotonic()
            try:
                self._conn = pika.SelectConnection(
                    self._params, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                    on_close_callback=self._on_closed)
                self._conn.ioloop.start()
            except Exception as exc:  # the loop must survive anything and keep reconnecting
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("rabbitmq publisher I/O loop failed: %s", self.last_error)
            self._ready.clear()
            self._fail_all(self.last_error or "connection closed")
            if self._closing:
                break
            if time.monotonic() - opened_at > 30:
                delays = backoff_delays(self._max_delay)
            time.sleep(next(delays))

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, conn: pika.SelectConnection, err: BaseException) -> None:
        self.last_error = f"cannot connect: {describe_error(err)}"
        conn.ioloop.stop()

    def _on_closed(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        if not self._closing:
            self.last_error = f"connection closed: {describe_error(reason)}"
            logger.warning("rabbitmq publisher %s", self.last_error)
        conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_ok)

    def _on_confirm_ok(self, _frame: Any) -> None:
        self._confirms.reset()
        self.generation += 1
        # frame_max as negotiated with the server (pika stores the result of the tuning in params)
        self._wire = (self.generation, PublishFrames(self._channel.channel_number,
                                                     self._conn.params.frame_max))  # type: ignore[union-attr]
        self._ready.set()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        # a channel error (e.g. publishing to a missing exchange) closes the channel only: reconnect all
        self.last_error = f"channel closed: {reason!r}"
        self._ready.clear()
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._confirms.confirm(method.delivery_tag, bool(method.multiple),
                               isinstance(method, pika.spec.Basic.Nack))

    def _fail_all(self, reason: str) -> None:
        self._confirms.fail_all(reason)

    def _send(self, batch: _Batch, generation: int, indexes: Sequence[int], data: bytes) -> None:
        """Runs on the I/O thread: number the publishes and write their frames in one go."""
        conn, channel = self._conn, self._channel
        if (generation != self.generation or conn is None or conn.is_closed or channel is None
                or not channel.is_open):
            batch.error = "connection changed before the batch was sent"
            batch.done.set()
            return
        self._confirms.add(batch, indexes)
        try:
            # the connection's single output point (it also keeps the byte counters the heartbeat
            # checker reads); one chunk, so one send() for the whole batch
            conn._output_marshaled_frames((data,))  # noqa: SLF001
        except Exception as exc:
            batch.error = f"{type(exc).__name__}: {exc}"
            batch.done.set()

    # ----- caller threads -----
    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def publish(self, messages: Sequence[WireMessage], timeout: float, deadline: Optional[float] = None) -> None:
        """Return once every message is confirmed; retry the unconfirmed ones across reconnects (so a
        message may be stored twice, never zero times) until ``deadline`` (monotonic; default: ``timeout``
        from now), then raise :class:`PublishError`."""
        self.publish_begin(messages, timeout, deadline)()

    def publish_begin(self, messages: Sequence[WireMessage], timeout: float,
                      deadline: Optional[float] = None) -> Callable[[], None]:
        """Hand the batch to the I/O thread now and return a function that waits for its confirms (and
        retries, as :meth:`publish`). Batches begun one after the other are written in that order and
        are in flight together: their confirms pipeline."""
        if not messages:
            return _no_wait
        if deadline is None:
            deadline = time.monotonic() + timeout
        batch = _Batch(messages)
        handed = self._attempt(batch, messages, deadline, timeout)

        def wait() -> None:
            self._finish(batch, messages, deadline, timeout, handed)
        return wait

    def _attempt(self, batch: _Batch, messages: Sequence[WireMessage], deadline: float, timeout: float) -> bool:
        """Encode the unconfirmed messages of ``batch`` and queue their write on the I/O thread. False if
        that could not be done now (try again); PublishError once ``deadline`` passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._ready.wait(remaining):
            reason = batch.error or self.last_error or "not connected"
            raise PublishError(f"rabbitmq publish to {shown_url(self.url)} failed: {len(batch.pending)} of "
                               f"{len(messages)} message(s) not confirmed within publish_timeout={timeout}s: "
                               f"{reason}")
        conn = self._conn
        generation, encoder = self._wire
        if encoder is None:  # not connected yet (ready is set only after _wire)
            time.sleep(0.01)
            return False
        indexes: Sequence[int] = (range(len(messages)) if len(batch.pending) == len(messages)
                                  else sorted(batch.pending))
        # encoded here, on the caller's thread: the I/O thread (shared by all publishing threads
        # and busy reading confirms) only numbers and writes
        data = encoder.encode(messages, indexes)
        batch.done.clear()
        batch.generation = generation
        try:
            conn.ioloop.add_callback_threadsafe(  # type: ignore[union-attr]
                lambda: self._send(batch, generation, indexes, data))
        except Exception as exc:
            batch.error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
            return False
        return True

    def _finish(self, batch: _Batch, messages: Sequence[WireMessage], deadline: float, timeout: float,
                handed: bool) -> None:
        nack_delays = backoff_delays(self._max_delay)
        while True:
            if not handed:
                handed = self._attempt(batch, messages, deadline, timeout)
                continue
            # wait in slices: if the connection is replaced the I/O thread fails the batch anyway,
            # but a callback queued to a loop that stopped would never run
            while not batch.done.wait(0.5):
                if batch.generation != self.generation or not self._ready.is_set():
                    if not batch.done.is_set():
                        batch.error = batch.error or "connection lost"
                    break
                if time.monotonic() > deadline:
                    break
            if not batch.pending:
                return
            logger.debug("rabbitmq publish retry of %d message(s): %s", len(batch.pending), batch.error)
            if batch.nacked:  # the server refuses now (queue full...): retry, but not in a hot loop
                batch.nacked = False
                time.sleep(max(0.0, min(next(nack_delays), deadline - time.monotonic())))
            handed = self._attempt(batch, messages, deadline, timeout)

    def close(self) -> None:
        self._closing = True
        conn = self._conn
        if conn is not None:
            try:
                conn.ioloop.add_callback_threadsafe(lambda: conn.close() if conn.is_open else conn.ioloop.stop())
            except Exception:
                pass
        self._thread.join(timeout=5)


class ThreadPublisher:
    """One ``BlockingConnection`` per publishing thread, in confirm mode, for single messages: the caller
    thread does the I/O itself, so a one-by-one ``push`` costs exactly one round trip, like raw pika,
    with no thread hand-off. Batches go through :class:`Publisher` instead."""

    def __init__(self, url: str, heartbeat: int, reconnect_max_delay: float) -> None:
        self.url = url
        self._params = connection_parameters(url, heartbeat, f"funboost-publisher-thread:{os.getpid()}")
        self._max_delay = reconnect_max_delay
        self._local = threading.local()

    def _channel(self, deadline: Optional[float] = None) -> Any:
        ch = getattr(self._local, "channel", None)
        if ch is not None and ch.is_open:
            return ch
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.is_open:
            conn = self._local.conn = pika.BlockingConnection(bounded_parameters(self._params, deadline))
        ch = self._local.channel = conn.channel()
        ch.confirm_delivery()
        return ch

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = self._local.channel = None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:
                pass

    def publish_one(self, item: PublishItem, timeout: float, deadline: Optional[float] = None) -> None:
        """Return once the broker confirmed ``item``; reconnect and resend on connection errors (an
        idle connection may have been closed by the server) until ``deadline`` (monotonic; default:
        ``timeout`` from now), then raise :class:`PublishError`."""
        if deadline is None:
            deadline = time.monotonic() + timeout
        delays = backoff_delays(self._max_delay)
        while True:
            try:
                self._channel(deadline).basic_publish(item.exchange, item.routing_key, item.body, item.properties)
                return
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._local.channel = None
                if exc.reply_code in (403, 404, 406):  # missing exchange, access refused: not transient
                    raise PublishError(f"rabbitmq at {shown_url(self.url)} refused the publish: {exc!r}") from exc
                error = repr(exc)
            except pika.exceptions.NackError as exc:
                error = f"the broker refused (nacked) the message: {exc!r}"
            except CONNECTION_ERRORS as exc:
                self._drop()
                error = f"cannot connect: {describe_error(exc)}"
            if time.monotonic() >= deadline:
                raise PublishError(f"rabbitmq publish to {shown_url(self.url)} failed: not confirmed within "
                                   f"publish_timeout={timeout}s: {error}")
            time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))


class Admin:
    """A lock-guarded ``BlockingConnection`` for synchronous management calls."""

    def __init__(self, url: str, heartbeat: int) -> None:
        self.url = url
        self._params = connection_parameters(url, heartbeat, f"funboost-admin:{os.getpid()}")
        self._lock = threading.Lock()
        self._conn: Optional[pika.BlockingConnection] = None
        self._channel: Any = None

    def _get_channel(self, deadline: Optional[float] = None) -> Any:
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(bounded_parameters(self._params, deadline))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def run(self, fn: Callable[[Any], T], retries: int = 2, deadline: Optional[float] = None) -> T:
        """Run ``fn(channel)``; reopen the connection and retry on connection errors. A channel
        error raised by the broker (404, 406) is re-raised at once: retrying would not help.
        ``deadline`` (monotonic) bounds the time a connect may take."""
        with self._lock:
            for attempt in range(retries + 1):
                try:
                    channel = self._get_channel(deadline)
                    return fn(channel)
                except pika.exceptions.ChannelClosedByBroker:
                    self._channel = None
                    raise
                except CONNECTION_ERRORS:
                    self._drop()
                    if attempt == retries:
                        raise
                    time.sleep(0.2 * (attempt + 1))
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()


_pool_lock: ProcessLocal[threading.Lock] = ProcessLocal(threading.Lock)  # guards publisher refcounts
# per process: a forked child opens its own connections (the parent's sockets stay the parent's)
_publishers: ProcessLocalDict[str, Publisher] = ProcessLocalDict()
_admins: ProcessLocalDict[str, Admin] = ProcessLocalDict()


def acquire_publisher(url: str, heartbeat: int, reconnect_max_delay: float) -> Publisher:
    with _pool_lock.get():
        pub = _publishers.get_or_create(url, lambda: Publisher(url, heartbeat, reconnect_max_delay))
        pub.refcount += 1
        return pub


def release_publisher(pub: Publisher) -> None:
    with _pool_lock.get():
        pub.refcount -= 1
        if pub.refcount > 0:
            return
        _publishers.pop_if(pub.url, pub)
    pub.close()


_thread_publishers: ProcessLocalDict[str, ThreadPublisher] = ProcessLocalDict()


def get_thread_publisher(url: str, heartbeat: int, reconnect_max_delay: float) -> ThreadPublisher:
    return _thread_publishers.get_or_create(url, lambda: ThreadPublisher(url, heartbeat, reconnect_max_delay))


def get_admin(url: str, heartbeat: int) -> Admin:
    return _admins.get_or_create(url, lambda: Admin(url, heartbeat))

