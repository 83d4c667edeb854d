"""``NATS_JETSTREAM``: one JetStream stream per queue, work-queue retention, one durable pull consumer
shared by every process of the queue.

* ``publish``: JetStream publishes awaited together (one PubAck each), retried across a reconnect until
  ``publish_timeout`` (a retry after a lost PubAck may store a message twice, which at-least-once allows;
  ``dedup_publish_retries`` adds a ``Nats-Msg-Id`` so the server's duplicate window drops it, at a cost).
* ``fetch``: a pump on the loop thread keeps up to one engine batch (the largest ``max_count`` asked
  for, at most ``max_prefetch``) buffered with batch pulls; ``fetch`` takes from that buffer. Messages
  stay pending on the server until ``ack`` (after the run). While a message is held here (buffered or
  running), the process's liveness ticker sends ``in_progress`` every ``in_progress_interval`` so a long
  task is never redelivered; a SIGKILLed process stops ticking and its messages come back after
  ``ack_wait``; a closing one ``nak``s what it buffered.
* ``requeue``: ``nak``. Delay: the eta travels in a header; a message fetched before its eta is
  ``nak``-ed with the remaining delay, so the server holds it (nothing waits in a consumer's memory).
  A header that is not a finite number (published by another client) sends the message to
  ``<queue>_dlx`` with the reason. No error from one message ends the pump: it is logged and counted
  (``pump_errors``), and the message is left to the server, which redelivers it after ``ack_wait``.
* ``queue_size``: from consumer info: ready = not yet delivered, in_flight = delivered and not acked
  (this includes requeued messages and delayed ones waiting for their eta), hence "approximate".
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from funboost.engine.liveness import Tick, ticker
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.redact import shown_url

from .naming import safe_token
from .options import JetStreamOptions
from .runtime import BrokerState, OperationTimeout, check_reachable, probe_options, runtime

logger = logging.getLogger("funboost.nats")

ETA_HEADER = "Funboost-Eta"
# errors after which a publish is retried
_RETRYABLE = (asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
              nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
              nats.errors.OutboundBufferLimitError, nats.errors.StaleConnectionError)
_PUBLISH_CONCURRENCY = 512  # PubAcks awaited at once
# the server keeps a nak delay as int64 nanoseconds (~292 years): a later eta is nak-ed again when it is back
_MAX_NAK_DELAY = 100 * 365 * 86400.0


def _parse_eta(text: str) -> float:
    """The epoch seconds of a ``Funboost-Eta`` header; ValueError unless it is a finite number."""
    eta = float(text)
    if not math.isfinite(eta):
        raise ValueError(f"not a finite number: {text!r}")
    return eta


def _delivery_count(msg: Msg) -> int:
    """How often the server delivered ``msg``, read from its ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``) without building the full
    metadata object on the hot path; other layouts (JetStream domains) go through ``msg.metadata``."""
    tokens = (msg.reply or "").split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4])
        return int(msg.metadata.num_delivered)
    except Exception:  # an unexpected reply subject must not lose a message that was handed out
        return 1


@dataclass
class _State:
    """What one broker instance holds in one process (rebuilt after fork)."""

    nc: Client
    js: Any
    sub: Any = None
    # id(msg) -> msg: fetched and not yet settled; the ticker reports these in progress
    held: dict[int, Msg] = field(default_factory=dict)
    ticker: Optional[Tick] = None
    pump: Any = None
    closed: bool = False
    # prefetched by the pump, not yet handed to the engine (thread-safe deque; cond wakes fetch)
    buffer: collections.deque = field(default_factory=collections.deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    target: int = 1  # how many the pump keeps buffered: the largest max_count asked for, capped
    room: Any = None  # asyncio.Event on the loop: the buffer has room again
    # (msg, reason): held messages the pump found unusable; ``fetch`` dead-letters them (the pump runs on
    # the loop thread, which must not wait for the dead-letter broker's synchronous publish)
    rejects: collections.deque = field(default_factory=collections.deque)
    pump_errors: int = 0  # errors the pump logged and survived


class NatsJetStreamBroker(Broker):
    kind = "nats_jetstream"
    aliases = ("jetstream", "nats_js")
    capabilities = Capabilities(
        at_least_once=True,  # unacked messages of a dead consumer come back after ack_wait
        persistent=True,  # file storage by default
        native_requeue=True,  # nak
        dead_letter=True,  # <queue>_dlx is another stream
        native_delay=True,  # nak with the remaining delay: the server holds the message
        priority=False, ordering="fifo",
        queue_size="approximate",  # requeued / delayed messages count as in flight (see module doc)
        in_flight_count=True, purge=True, broadcast=False, request_response=False, cross_process=True)
    options_model = JetStreamOptions

    def __init__(self, queue_name: str, options: Optional[JetStreamOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: JetStreamOptions
        token = safe_token(queue_name)
        self.stream_name = f"{self.options.stream_prefix}{token}"
        self.subject = f"{self.options.subject_prefix}.{token}"
        self._lock = threading.Lock()
        self._local: BrokerState[_State] = BrokerState(self._open)

    @property
    def pump_errors(self) -> int:
        """Errors of this process's fetch pump that were logged and survived (0 before consuming)."""
        st = self._local.peek()
        return st.pump_errors if st is not None else 0

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        opts = options if isinstance(options, JetStreamOptions) else cls.options_model()
        reason = check_reachable(opts.url, opts.connect_timeout)
        if reason:
            return reason

        async def probe() -> None:
            import nats as nats_mod
            nc = await nats_mod.connect(**probe_options(opts.url, opts.connect_timeout))
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()
        try:
            runtime().call(probe(), timeout=opts.connect_timeout * 2 + 5)
        except Exception as exc:
            return f"NATS at {shown_url(opts.url)} has no JetStream: {type(exc).__name__}: {exc}"
        return None

    # ------------------------------------------------------------------ setup
    def _state(self, deadline: Optional[float] = None) -> _State:
        """This process's state, opened now if needed; by ``deadline`` (monotonic) when given."""
        return self._local.get(deadline)

    def _open(self, deadline: Optional[float]) -> _State:
        o = self.options
        nc = runtime().acquire(o.url, o.connect_timeout, o.reconnect_wait,
                               timeout=None if deadline is None else deadline - time.monotonic())
        try:
            st = _State(nc=nc, js=nc.jetstream(timeout=max(5.0, o.connect_timeout)))
            runtime().call(self._declare(st),
                           timeout=o.publish_timeout if deadline is None else max(0.01, deadline - time.monotonic()),
                           what=f"declaring the NATS stream {self.stream_name!r}")
        except BaseException:
            runtime().release(o.url)  # the state was not built: nobody else would release it
            raise
        return st

    async def _declare(self, st: _State) -> None:
        """Create the stream if missing (idempotent). Publishers stop here: only consumers declare the
        durable consumer, so a publisher's defaults never overwrite the consumers' ack_wait."""
        o = self.options
        try:
            await st.js.stream_info(self.stream_name)
        except nats.js.errors.NotFoundError:
            try:
                await st.js.add_stream(StreamConfig(
                    name=self.stream_name, subjects=[self.subject], retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE if o.storage == "file" else StorageType.MEMORY,
                    num_replicas=o.replicas))
            except nats.js.errors.BadRequestError:  # created by another process meanwhile
                await st.js.stream_info(self.stream_name)

    async def _declare_consumer(self, st: _State) -> None:
        """Create or update the durable pull consumer (the last consumer to start sets ack_wait)."""
        o = self.options
        config = ConsumerConfig(
            durable_name=o.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=o.ack_wait,
            max_ack_pending=o.max_ack_pending, max_deliver=o.max_deliver, filter_subject=self.subject)
        await st.js.add_consumer(self.stream_name, config)

    def _start_consuming(self, st: _State) -> None:
        """Bind the pull subscription and start the pump and the in-progress ticker (first fetch)."""
        with self._lock:
            if st.sub is not None:
                return

            async def bind() -> Any:
                st.room = asyncio.Event()
                await self._declare_consumer(st)
                return await st.js.pull_subscribe_bind(self.options.durable, self.stream_name)
            st.sub = runtime().call(bind(), timeout=self.options.publish_timeout)
            st.pump = runtime().spawn(lambda: self._pump(st))
            # the process's liveness ticker (one thread for every heartbeat of the process)
            st.ticker = ticker().every(self.options.progress_interval, self._report_in_progress,
                                       name=f"nats in_progress {self.stream_name}")

    async def _pump(self, st: _State) -> None:
        """Keep up to ``st.target`` messages buffered with batch pulls, so that the engine's fetch
        rarely waits for a round trip. Buffered messages are held (reported in progress) like running
        ones; a dead process's buffer comes back after ack_wait, a closing one's is nak-ed at once."""
        pause = 0.1
        while not st.closed:
            try:
                room = st.target - len(st.buffer)
                if room < max(1, st.target // 2):  # refill at half, in batches
                    st.room.clear()
                    await st.room.wait()
                    continue
                try:
                    msgs = await st.sub.fetch(room, timeout=self.options.pull_timeout)
                    pause = 0.1
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # disconnected: the client reconnects by itself
                    logger.debug("pull from %s failed: %s", self.stream_name, exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                now = time.time()
                ready: list[Msg] = []
                for msg in msgs:
                    try:
                        await self._sort_out(st, msg, now, ready)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        # one message must never end the pump: not held, so the server redelivers it
                        # after ack_wait (nothing lost; a lasting error shows up once per ack_wait)
                        st.held.pop(id(msg), None)
                        st.pump_errors += 1
                        logger.error("NATS_JETSTREAM %s: could not handle a fetched message (%s: %s); the "
                                     "server redelivers it after ack_wait", self.stream_name,
                                     type(exc).__name__, exc)
                if ready:
                    with st.cond:
                        st.buffer.extend(ready)
                        st.cond.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a client surprise: log, count, keep pumping
                st.pump_errors += 1
                logger.exception("NATS_JETSTREAM %s: fetch pump error (%s); going on", self.stream_name, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _sort_out(self, st: _State, msg: Msg, now: float, ready: list[Msg]) -> None:
        """Hold ``msg`` and add it to ``ready``, or ``nak`` it until its eta, or queue it for the dead
        letter queue when its eta header is unusable."""
        eta_text = (msg.headers or {}).get(ETA_HEADER)
        if eta_text:
            try:
                eta = _parse_eta(eta_text)
            except ValueError:
                # another client published it: neither run it at a made-up time nor drop it
                st.held[id(msg)] = msg
                with st.cond:
                    st.rejects.append((msg, f"invalid {ETA_HEADER} header {eta_text[:100]!r}: not a finite "
                                            f"number of epoch seconds"))
                    st.cond.notify_all()
                return
            wait = eta - now
            if wait > 0.001:
                await msg.nak(delay=min(wait, _MAX_NAK_DELAY))  # the server holds it until its eta
                return
        st.held[id(msg)] = msg
        ready.append(msg)

    def _report_in_progress(self) -> None:
        """Report every held message (buffered or running) in progress, so the server does not
        redeliver a task that is still running here. Called by the liveness ticker."""
        st = self._local.peek()
        if st is None or st.closed or not st.held:
            return

        async def report() -> None:
            for msg in list(st.held.values()):
                await msg.in_progress()
        # disconnected: raises; the ticker retries soon, and the server redelivers after ack_wait at worst
        runtime().call(report(), timeout=max(1.0, self.options.progress_interval))

    # ------------------------------------------------------------------ data path
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        # one deadline for connecting, declaring the stream and the PubAcks
        deadline = time.monotonic() + self.options.publish_timeout
        try:
            st = self._state(deadline)
        except OperationTimeout as exc:
            raise OperationTimeout(f"NATS_JETSTREAM publish to {self.stream_name!r} failed within "
                                   f"{self.options.publish_timeout:g}s: {exc}") from None
        # the coroutine ends by the deadline itself; the margin only guards against a stuck loop
        runtime().call(self._publish(st, messages, deadline), timeout=max(0.0, deadline - time.monotonic()) + 10,
                       what=f"NATS_JETSTREAM publish to {self.stream_name!r}")

    async def _publish(self, st: _State, messages: Sequence[OutgoingMessage], deadline: float) -> None:
        sem = asyncio.Semaphore(_PUBLISH_CONCURRENCY)
        now = time.time()
        dedup = self.options.dedup_publish_retries

        async def one(m: OutgoingMessage) -> None:
            headers: Optional[dict] = {"Nats-Msg-Id": uuid.uuid4().hex} if dedup else None
            if m.eta is not None and m.eta > now:
                headers = {**(headers or {}), ETA_HEADER: repr(m.eta)}
            data = m.body.encode() if isinstance(m.body, str) else bytes(m.body)
            async with sem:
                await self._publish_retrying(st, data, headers, deadline)
        await asyncio.gather(*(one(m) for m in messages))

    async def _publish_retrying(self, st: _State, data: bytes, headers: Optional[dict], deadline: float) -> None:
        pause = 0.05
        while True:
            try:
                await st.js.publish(self.subject, data, headers=headers,
                                    timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                return
            except _RETRYABLE as exc:
                if time.monotonic() + pause >= deadline:
                    raise TimeoutError(f"NATS_JETSTREAM publish to {self.stream_name!r} failed for "
                                       f"{self.options.publish_timeout}s: {type(exc).__name__}: {exc}") from exc
                if isinstance(exc, nats.errors.NoRespondersError) and st.nc.is_connected:
                    try:  # the stream was deleted (or the server lost it): declare it again
                        await self._declare(st)
                    except Exception:
                        pass
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        st = self._state()
        if st.sub is None:
            self._start_consuming(st)
        if max_count > st.target:
            st.target = min(max_count, self.options.max_prefetch)
            self._wake_pump(st)
        deadline = time.monotonic() + timeout
        while True:
            if st.rejects:
                self._dead_letter_rejects(st)
            with st.cond:
                while not st.buffer and not st.rejects:
                    left = deadline - time.monotonic()
                    if left <= 0 or st.closed:
                        return []
                    st.cond.wait(left)
                if st.buffer:
                    msgs = [st.buffer.popleft() for _ in range(min(max_count, len(st.buffer)))]
                    break
        if len(st.buffer) < max(1, st.target // 2):
            self._wake_pump(st)
        return [Delivery(body=m.data, tag=m, redelivered=_delivery_count(m) > 1) for m in msgs]

    def _dead_letter_rejects(self, st: _State) -> None:
        """Send the messages the pump refused to ``<queue>_dlx`` with their reason (on the fetching
        thread). A failed dead-letter publish leaves the message to the server (redelivered after ack_wait,
        refused again, retried): never lost, never a dead consumer."""
        while True:
            with st.cond:
                if not st.rejects:
                    return
                msg, reason = st.rejects.popleft()
            logger.error("NATS_JETSTREAM %s: a message goes to the dead letter queue: %s", self.stream_name, reason)
            try:
                self.reject([Delivery(body=msg.data, tag=msg)], reason)
            except Exception as exc:
                st.held.pop(id(msg), None)
                st.pump_errors += 1
                logger.error("NATS_JETSTREAM %s: dead-lettering a message failed (%s: %s); the server redelivers "
                             "it after ack_wait", self.stream_name, type(exc).__name__, exc)

    @staticmethod
    def _wake_pump(st: _State) -> None:
        if st.room is not None:
            runtime().loop.call_soon_threadsafe(st.room.set)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "ack")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "nak")

    def _settle(self, deliveries: Sequence[Delivery], how: str, st: Optional[_State] = None) -> None:
        if not deliveries:
            return
        st = st or self._state()

        async def settle() -> None:
            for d in deliveries:
                msg: Msg = d.tag
                st.held.pop(id(msg), None)
                await (msg.ack() if how == "ack" else msg.nak())
            await st.nc.flush(timeout=max(1, int(self.options.publish_timeout)))
        runtime().call(settle(), timeout=self.options.publish_timeout + 10)

    def queue_size(self) -> QueueSize:
        st = self._state()

        async def size() -> QueueSize:
            try:
                # what this process prefetched and has not handed out yet is still ready. Read before
                # the server's snapshot: a message buffered meanwhile is then counted in flight rather
                # than a handed-out one counted ready
                buffered = len(st.buffer)
                ci = await st.js.consumer_info(self.stream_name, self.options.durable)
                return QueueSize(ready=int(ci.num_pending or 0) + buffered,
                                 in_flight=max(0, int(ci.num_ack_pending or 0) - buffered))
            except nats.js.errors.NotFoundError:
                si = await st.js.stream_info(self.stream_name)
                return QueueSize(ready=int(si.state.messages), in_flight=None)
        return runtime().call(size(), timeout=self.options.publish_timeout)

    def purge(self) -> int:
        st = self._state()

        async def purge() -> int:
            si = await st.js.stream_info(self.stream_name)
            await st.js.purge_stream(self.stream_name)
            return int(si.state.messages)
        n = runtime().call(purge(), timeout=self.options.publish_timeout)
        with st.cond:
            st.buffer.clear()
            st.rejects.clear()
        st.held.clear()
        self._wake_pump(st)
        return n

    def delete_stream(self) -> None:
        """Remove the queue's stream and its consumer from the server (tests, decommissioning)."""
        st = self._state()
        try:
            runtime().call(st.js.delete_stream(self.stream_name), timeout=self.options.publish_timeout)
        except nats.js.errors.NotFoundError:
            pass

    def close(self) -> None:
        super().close()
        with self._lock:  # a later call opens it again (a booster may publish after stop_consume)
            st = self._local.clear()
        if st is None:
            return
        st.closed = True
        if st.ticker is not None:
            st.ticker.cancel()
        if st.pump is not None:
            st.pump.cancel()
        with st.cond:
            # refused messages too: the next consumer dead-letters them
            unsent = list(st.buffer) + [m for m, _ in st.rejects]
            st.buffer, st.rejects = collections.deque(), collections.deque()
            st.cond.notify_all()
        if unsent:  # prefetched, never handed out: back to the stream at once, not after ack_wait
            try:
                self._settle([Delivery(body=None, tag=m) for m in unsent], "nak", st)
            except Exception as exc:
                logger.debug("nak of %d prefetched messages: %s", len(unsent), exc)
        if st.sub is not None:
            try:
                runtime().call(st.sub.unsubscribe(), timeout=5)
            except Exception as exc:
                logger.debug("unsubscribe: %s", exc)
        runtime().release(self.options.url)
