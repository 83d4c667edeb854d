"""Connections shared by the broker instances of one process: a confirming publisher and an admin channel.

pika connections are not thread-safe, so each one here is owned by exactly one thread or one lock:

* :class:`Publisher` runs a ``SelectConnection`` on its own I/O thread. Callers hand it a batch through
  ``add_callback_threadsafe`` and wait for the publisher confirms, so a batch of N costs one round trip,
  not N, and several publishing threads share one connection with their confirms pipelined.
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
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import pika
import pika.exceptions

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
        yield delay * (0.75 + random.random() / 2)
        delay = min(max_delay, delay * 2)


class PublishItem:
    """One message ready for ``basic_publish``."""

    __slots__ = ("exchange", "routing_key", "body", "properties")

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties):
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties


class _Batch:
    """A batch in flight on the publisher's I/O thread; ``pending`` are indexes not yet confirmed."""

    __slots__ = ("items", "pending", "done", "error", "generation")

    def __init__(self, items: Sequence[PublishItem], indexes: Sequence[int]) -> None:
        self.items = items
        self.pending = set(indexes)
        self.done = threading.Event()
        self.error: Optional[str] = None
        self.generation = -1


class PublishError(ConnectionError):
    pass


class Publisher:
    """One ``SelectConnection`` with a confirm-mode channel, driven by a daemon I/O thread."""

    def __init__(self, url: str, heartbeat: int, reconnect_max_delay: float) -> None:
        self.url = url
        self._params = connection_parameters(url, heartbeat, f"funboost-publisher:{os.getpid()}")
        self._max_delay = reconnect_max_delay
        self._ready = threading.Event()
        self._closing = False
        self._conn: Optional[pika.SelectConnection] = None
        self._channel: Any = None
        self.generation = 0  # bumped on every (re)connect; a batch from an older one has failed
        self._seq = 0
        # confirm sequence number -> (batch, index); ordered so that multiple-acks pop from the front
        self._unconfirmed: "collections.OrderedDict[int, tuple[_Batch, int]]" = collections.OrderedDict()
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
        self.last_error = f"cannot connect to {_safe_url(self.url)}: {err!r}"
        conn.ioloop.stop()

    def _on_closed(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        if not self._closing:
            self.last_error = f"connection closed: {reason!r}"
            logger.warning("rabbitmq publisher %s", self.last_error)
        conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_ok)

    def _on_confirm_ok(self, _frame: Any) -> None:
        self._seq = 0
        self.generation += 1
        self._ready.set()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        # a channel error (e.g. publishing to a missing exchange) closes the channel only: reconnect all
        self.last_error = f"channel closed: {reason!r}"
        self._ready.clear()
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        tag = method.delivery_tag
        unconfirmed = self._unconfirmed
        if method.multiple:
            while unconfirmed:
                seq = next(iter(unconfirmed))
                if seq > tag:
                    break
                self._settle(*unconfirmed.popitem(last=False)[1], nack)
        else:
            entry = unconfirmed.pop(tag, None)
            if entry is not None:
                self._settle(entry[0], entry[1], nack)

    @staticmethod
    def _settle(batch: _Batch, index: int, nack: bool) -> None:
        if nack:
            batch.error = "the broker refused (nacked) a message"
        else:
            batch.pending.discard(index)
        if not batch.pending or nack:
            batch.done.set()

    def _fail_all(self, reason: str) -> None:
        for batch, _ in list(self._unconfirmed.values()):
            batch.error = batch.error or reason
            batch.done.set()
        self._unconfirmed.clear()

    def _send(self, batch: _Batch) -> None:
        """Runs on the I/O thread."""
        channel = self._channel
        if batch.generation != self.generation or channel is None or not channel.is_open:
            batch.error = "connection changed before the batch was sent"
            batch.done.set()
            return
        try:
            for i in sorted(batch.pending):
                item = batch.items[i]
                self._seq += 1
                self._unconfirmed[self._seq] = (batch, i)
                channel.basic_publish(item.exchange, item.routing_key, item.body, item.properties)
        except Exception as exc:
            batch.error = f"{type(exc).__name__}: {exc}"
            batch.done.set()
        self._coalesce_output()

    def _coalesce_output(self) -> None:
        """pika queues every frame (3 per message) as its own chunk and calls ``send()`` once per
        chunk; joining what a batch queued turns thousands of syscalls into a few. The transport's
        buffer is pika internals, so this only acts when it looks as expected (else: no-op)."""
        transport = getattr(self._conn, "_transport", None)
        chunks = getattr(transport, "_tx_buffers", None)
        if isinstance(chunks, collections.deque) and len(chunks) > 1:
            joined = b"".join(chunks)
            chunks.clear()
            chunks.append(joined)

    # ----- caller threads -----
    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def publish(self, items: Sequence[PublishItem], timeout: float) -> None:
        """Return once every item is confirmed; retry the unconfirmed ones across reconnects (so a
        message may be stored twice, never zero times) until ``timeout``."""
        if not items:
            return
        deadline = time.monotonic() + timeout
        batch = _Batch(items, range(len(items)))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._ready.wait(remaining):
                raise PublishError(f"rabbitmq publish timed out after {timeout}s ({len(batch.pending)} of "
                                   f"{len(items)} unconfirmed): {self.last_error or 'not connected'}")
            conn = self._conn
            batch.error = None
            batch.done.clear()
            batch.generation = self.generation
            try:
                conn.ioloop.add_callback_threadsafe(lambda: self._send(batch))  # type: ignore[union-attr]
            except Exception as exc:
                batch.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
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

    def _channel(self) -> Any:
        ch = getattr(self._local, "channel", None)
        if ch is not None and ch.is_open:
            return ch
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.is_open:
            conn = self._local.conn = pika.BlockingConnection(self._params)
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

    def publish_one(self, item: PublishItem, timeout: float) -> None:
        """Return once the broker confirmed ``item``; reconnect and resend on connection errors (an
        idle connection may have been closed by the server) until ``timeout``."""
        deadline = time.monotonic() + timeout
        delays = backoff_delays(self._max_delay)
        while True:
            try:
                self._channel().basic_publish(item.exchange, item.routing_key, item.body, item.properties)
                return
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._local.channel = None
                if exc.reply_code in (403, 404, 406):  # missing exchange, access refused: not transient
                    raise PublishError(f"rabbitmq refused the publish: {exc!r}") from exc
                error = repr(exc)
            except pika.exceptions.NackError as exc:
                error = f"the broker refused (nacked) the message: {exc!r}"
            except CONNECTION_ERRORS as exc:
                self._drop()
                error = f"{type(exc).__name__}: {exc!r}"
            if time.monotonic() >= deadline:
                raise PublishError(f"rabbitmq publish timed out after {timeout}s: {error}")
            time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))


class Admin:
    """A lock-guarded ``BlockingConnection`` for synchronous management calls."""

    def __init__(self, url: str, heartbeat: int) -> None:
        self.url = url
        self._params = connection_parameters(url, heartbeat, f"funboost-admin:{os.getpid()}")
        self._lock = threading.Lock()
        self._conn: Optional[pika.BlockingConnection] = None
        self._channel: Any = None

    def _get_channel(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(self._params)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def run(self, fn: Callable[[Any], T], retries: int = 2) -> T:
        """Run ``fn(channel)``; reopen the connection and retry on connection errors. A channel
        error raised by the broker (404, 406) is re-raised at once: retrying would not help."""
        with self._lock:
            for attempt in range(retries + 1):
                try:
                    channel = self._get_channel()
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


_pool_lock = threading.Lock()
_publishers: dict[tuple[int, str], Publisher] = {}
_admins: dict[tuple[int, str], Admin] = {}


def acquire_publisher(url: str, heartbeat: int, reconnect_max_delay: float) -> Publisher:
    key = (os.getpid(), url)
    with _pool_lock:
        pub = _publishers.get(key)
        if pub is None:
            pub = _publishers[key] = Publisher(url, heartbeat, reconnect_max_delay)
        pub.refcount += 1
        return pub


def release_publisher(pub: Publisher) -> None:
    with _pool_lock:
        pub.refcount -= 1
        if pub.refcount > 0:
            return
        _publishers.pop((os.getpid(), pub.url), None)
    pub.close()


_thread_publishers: dict[tuple[int, str], ThreadPublisher] = {}


def get_thread_publisher(url: str, heartbeat: int, reconnect_max_delay: float) -> ThreadPublisher:
    key = (os.getpid(), url)
    with _pool_lock:
        tp = _thread_publishers.get(key)
        if tp is None:
            tp = _thread_publishers[key] = ThreadPublisher(url, heartbeat, reconnect_max_delay)
        return tp


def get_admin(url: str, heartbeat: int) -> Admin:
    key = (os.getpid(), url)
    with _pool_lock:
        admin = _admins.get(key)
        if admin is None:
            admin = _admins[key] = Admin(url, heartbeat)
        return admin


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        scheme, rest = url.split("://", 1)
        if "@" in rest:
            cred, host = rest.rsplit("@", 1)
            user = cred.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
    except ValueError:
        pass
    return url


safe_url = _safe_url
