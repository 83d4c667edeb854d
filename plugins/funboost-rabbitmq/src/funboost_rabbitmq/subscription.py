"""The consuming side: one I/O thread owns a ``BlockingConnection`` and everything done on its channel.

The engine calls ``fetch`` from its dispatch thread and ``ack``/``requeue`` from another thread. pika is
not thread-safe, so those calls never touch the channel: ``fetch`` reads a local buffer filled by the
``basic_consume`` callback, and acks are handed to the I/O thread with ``add_callback_threadsafe``.

Every (re)connection is a new *generation*. A delivery tag is only valid on the channel that delivered it,
so deliveries of an older generation are never acked on the new channel: RabbitMQ has already put them
back in the queue when the old connection died, and they will be delivered again.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Optional, Sequence

import pika

from funboost.plugins.broker import Delivery

from .connection import CONNECTION_ERRORS, TopologyError, backoff_delays, connection_parameters

logger = logging.getLogger("funboost.rabbitmq")

AUTO_PREFETCH_MAX = 1000
# The automatic prefetch follows the engine's capacity (the largest batch it asked for). It starts at
# AUTO_PREFETCH_START times that: the workers' messages and as many waiting, so that a consumer of long
# tasks holds few that an idle consumer could run. It doubles, up to AUTO_PREFETCH_FACTOR times, each time
# the engine asks for more than the buffer holds while the prefetch is the limit (every allowed delivery
# is unacked): short tasks, where a larger margin lets deliveries arrive in fewer, larger socket reads
# and keeps the I/O thread ahead of a pool that drains the buffer in bursts (they stay unacked, so a
# crash returns them).
AUTO_PREFETCH_START = 2
AUTO_PREFETCH_FACTOR = 10


class AmqpSubscription:
    """Consumes one queue in a background thread and buffers up to ``prefetch`` deliveries."""

    def __init__(self, url: str, heartbeat: int, reconnect_max_delay: float, name: str,
                 declare: Callable[[Any], str], prefetch: int, auto_prefetch: bool, no_ack: bool,
                 channel_qos: bool = True, queue_name: str = "") -> None:
        self._params = connection_parameters(url, heartbeat, name)
        self.queue_name = queue_name  # the broker's queue, for messages (``queue`` is set once declared)
        self._max_delay = reconnect_max_delay
        self._declare = declare  # declares the topology on a channel, returns the queue to consume
        self._no_ack = no_ack
        # RabbitMQ applies a per-consumer basic.qos only to consumers started after it, but a
        # channel-wide one (global) at once; with one consumer per channel both mean the same, so the
        # channel-wide limit lets the prefetch follow the engine. Quorum queues refuse it: fixed there.
        self._channel_qos = channel_qos
        self._auto_prefetch = auto_prefetch and channel_qos
        self._prefetch = prefetch
        self._applied_prefetch = 0
        self._largest_batch = 1  # the largest batch the engine asked for (its capacity)
        self._cond = threading.Condition(threading.Lock())
        self._buffer: "collections.deque[Delivery]" = collections.deque()
        self._waiting = False  # fetch() sleeps on _cond for an empty buffer
        # delivery tag -> True for deliveries of the current channel not yet acked (I/O thread only)
        self._unacked: "collections.OrderedDict[int, bool]" = collections.OrderedDict()
        self.generation = 0
        self.queue: Optional[str] = None
        self.connected = threading.Event()
        self.reconnects = 0
        self.last_error = ""
        # set when the queue cannot be used as configured (TopologyError): consuming has stopped for good
        self.failed: Optional[str] = None
        self._conn: Optional[pika.BlockingConnection] = None
        self._channel: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"funboost-rabbitmq-consumer:{name}",
                                        daemon=True)
        self._thread.start()

    # ----- I/O thread -----
    def _run(self) -> None:
        delays = backoff_delays(self._max_delay)
        while not self._stop.is_set():
            conn = None
            opened_at = time.monotonic()
            try:
                conn = pika.BlockingConnection(self._params)
                channel = conn.channel()
                queue = self._declare(channel)
                self._applied_prefetch = 0 if self._no_ack else self._prefetch
                if not self._no_ack:
                    channel.basic_qos(prefetch_count=self._applied_prefetch, global_qos=self._channel_qos)
                with self._cond:
                    self.generation += 1
                    self._buffer.clear()
                self._unacked.clear()
                gen = self.generation
                cancelled: list[Any] = []
                # the broker cancels the consumer when the queue is deleted (or its node fails): without
                # this the loop below would go on serving a channel that receives nothing, for good
                channel.add_on_cancel_callback(cancelled.append)
                channel.basic_consume(queue, on_message_callback=self._make_on_message(gen),
                                      auto_ack=self._no_ack)
                self.queue = queue
                self._conn, self._channel = conn, channel
                self.connected.set()
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=1.0)
                    if cancelled:
                        raise pika.exceptions.ChannelClosed(
                            -1, f"the server cancelled the consumer of {queue!r} (queue deleted?)")
                    if channel.is_closed:
                        # closed by the broker (e.g. consumer_timeout, PRECONDITION_FAILED): pika only
                        # raises that on the channel's next use, which may never come
                        raise pika.exceptions.ChannelClosed(
                            -1, f"channel closed by the server: {getattr(channel, '_closing_reason', '')}")
            except TopologyError as exc:
                # the same declaration would be refused again on every reconnect: say once, loudly, what
                # to change, and stop (fetch then returns nothing) instead of reconnecting in a loop
                self.last_error = self.failed = str(exc)
                logger.error("rabbitmq consumer of %r stopped: %s It consumes nothing until it is started again "
                             "(booster.stop_consume() then consume(), or a new process) after that change.",
                             self.queue_name or self.queue, exc)
            except CONNECTION_ERRORS as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug or an unexpected reply must not end consuming for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("rabbitmq consumer loop error")
            finally:
                self.connected.clear()
                self._conn, self._channel = None, None
                with self._cond:
                    self._buffer.clear()  # RabbitMQ redelivers these: the channel that held them is gone
                self._unacked.clear()
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:
                        pass
            if self._stop.is_set() or self.failed:
                break
            self.reconnects += 1
            if time.monotonic() - opened_at > 30:
                delays = backoff_delays(self._max_delay)
            delay = next(delays)
            logger.warning("rabbitmq consumer of %r disconnected (%s); reconnecting in %.1fs",
                           self.queue or self.queue_name, self.last_error, delay)
            self._stop.wait(delay)

    def _make_on_message(self, gen: int) -> Callable[..., None]:
        buffer, cond, unacked, no_ack = self._buffer, self._cond, self._unacked, self._no_ack

        def on_message(_channel: Any, method: Any, _props: Any, body: bytes) -> None:
            tag = method.delivery_tag
            if not no_ack:
                unacked[tag] = True
            # deque.append is atomic; the condition is only taken when fetch() sleeps on an empty
            # buffer (it raises _waiting under the lock before re-checking), which saves a lock
            # round and a wake-up per message while the engine keeps up
            buffer.append(Delivery(body=body, tag=(gen, tag), redelivered=method.redelivered))
            if self._waiting:
                with cond:
                    cond.notify()

        return on_message

    def _settle(self, gen: int, tags: Sequence[int], ack: bool) -> None:
        """Runs on the I/O thread. A tag that is not outstanding (already settled, or from an older
        channel) is skipped: acking an unknown tag would make the broker close the channel."""
        channel = self._channel
        if gen != self.generation or channel is None:
            return
        unacked = self._unacked
        mine = [t for t in tags if unacked.pop(t, None)]
        if not mine:
            return
        if not ack:
            for t in mine:
                channel.basic_nack(t, multiple=False, requeue=True)
            return
        # every outstanding tag below the lowest one still held is in this batch: one multiple-ack
        # settles that prefix (acks usually come in delivery order)
        low = next(iter(unacked)) if unacked else None
        below = [t for t in mine if low is None or t < low]
        if below:
            channel.basic_ack(max(below), multiple=True)
        if len(below) < len(mine):
            for t in mine:
                if low is not None and t > low:
                    channel.basic_ack(t, multiple=False)

    def _set_prefetch(self, gen: int, value: int) -> None:
        if gen == self.generation and self._channel is not None and value > self._applied_prefetch:
            self._channel.basic_qos(prefetch_count=value, global_qos=True)
            self._applied_prefetch = value

    def _call(self, fn: Callable[[], None]) -> None:
        conn = self._conn
        if conn is None:
            return  # reconnecting: the old channel's deliveries are redelivered anyway
        try:
            conn.add_callback_threadsafe(fn)
        except Exception:
            pass

    # ----- engine threads -----
    def wanted(self, max_count: int) -> None:
        """The engine can run ``max_count`` more tasks: the auto prefetch is at least AUTO_PREFETCH_START
        times the largest such batch; it grows further when the engine starves (see ``fetch``)."""
        if not self._auto_prefetch or self._no_ack:
            return
        if max_count > self._largest_batch:
            self._largest_batch = max_count
        self._grow_prefetch(min(AUTO_PREFETCH_MAX, max(1, AUTO_PREFETCH_START * self._largest_batch)))

    def _grow_prefetch(self, want: int) -> None:
        if want > self._prefetch:
            self._prefetch = want
            gen = self.generation
            self._call(lambda: self._set_prefetch(gen, want))

    def _starved(self, max_count: int, got: int) -> None:
        """The engine asked for ``max_count`` and the buffer had ``got``: when every delivery the prefetch
        allows is out (unacked), the prefetch is what holds the pool back: double it, up to the ceiling. A
        queue that is merely empty has fewer unacked than that, and does not grow it."""
        if not self._auto_prefetch or self._no_ack or got >= max_count:
            return
        ceiling = min(AUTO_PREFETCH_MAX, max(1, AUTO_PREFETCH_FACTOR * self._largest_batch))
        if self._prefetch < ceiling and self._applied_prefetch and len(self._unacked) >= self._applied_prefetch:
            self._grow_prefetch(min(ceiling, self._prefetch * 2))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        buffer = self._buffer
        if len(buffer) < max_count:
            self._starved(max_count, len(buffer))
        if not buffer and timeout > 0:
            with self._cond:
                self._waiting = True
                try:
                    deadline = time.monotonic() + timeout
                    while not buffer:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return []
                        self._cond.wait(remaining)
                finally:
                    self._waiting = False
        # only this thread pops (the engine's single dispatch thread; the I/O thread only appends,
        # and clears under the lock on reconnect), so popleft may still find the deque emptied
        out: list[Delivery] = []
        try:
            for _ in range(min(max_count, len(buffer))):
                out.append(buffer.popleft())
        except IndexError:
            pass
        return out

    def settle(self, deliveries: Sequence[Delivery], ack: bool) -> None:
        if self._no_ack or not deliveries:
            return
        by_gen: dict[int, list[int]] = {}
        for d in deliveries:
            gen, tag = d.tag
            by_gen.setdefault(gen, []).append(tag)
        current = self.generation
        tags = by_gen.get(current)
        if tags:
            self._call(lambda: self._settle(current, tags, ack))

    def buffered(self) -> int:
        """Deliveries received but not yet handed to the engine: still *ready* from the app's view."""
        return len(self._buffer)

    def in_flight(self) -> Optional[int]:
        """Deliveries this process handed to the engine and has not settled yet."""
        if self._no_ack or not self.connected.is_set():
            return None
        return max(0, len(self._unacked) - len(self._buffer))

    def drop_buffered(self, timeout: float = 5.0) -> int:
        """Ack (i.e. delete) what was prefetched but not handed out; used by purge, after the
        server-side purge so that the freed prefetch finds the queue empty."""
        done = threading.Event()
        result = [0]

        def run() -> None:
            try:
                # popped one by one: fetch() pops without the lock, so each item goes to one side only
                items = []
                try:
                    while True:
                        items.append(self._buffer.popleft())
                except IndexError:
                    pass
                result[0] = len(items)
                gen = self.generation
                self._settle(gen, [d.tag[1] for d in items if d.tag[0] == gen], ack=True)
            finally:
                done.set()

        if self._conn is None:
            return 0
        self._call(run)
        done.wait(timeout)
        return result[0]

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._call(lambda: None)  # wake process_data_events
        self._thread.join(timeout)
