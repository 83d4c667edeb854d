"""``NATS_CORE`` (alias ``nats``): plain NATS subjects with a queue group, no server-side storage.

* Every consumer process of a queue joins the queue group ``queue_group`` on the queue's subject; the
  server hands each message to one member. A member buffers what it received (up to
  ``pending_msgs_limit``) and ``fetch`` takes from that buffer.
* ``publish``: with ``confirm_publish`` (default) each message is a request that the receiving
  consumer answers as soon as the message is in its buffer, so a message published while no consumer
  listens is parked and offered again in the background until one joins (for ``publish_timeout``,
  then dropped with an error log; waited for at interpreter exit) instead of vanishing. Without it, a
  plain fire-and-forget publish: faster, and dropped when nobody listens.
* Either way this is *at-most-once*: a message in the buffer of a consumer that dies is lost; nothing
  survives a server restart. ``requeue`` puts messages back into the local buffer.
* ``sync_call``: NATS request-reply. The consumer runs the function and replies with the final status.
* Dead letters go to the subject of ``<queue>_dlx`` fire-and-forget: kept only if a consumer of the
  dead-letter queue is listening.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from funboost.plugins.broker import (Broker, Capabilities, Delivery, OutgoingMessage, QueueSize,
                                     annotate_dead_letter)
from funboost.keepalive import on_graceful_exit
from funboost.result import RemoteTaskError

from .naming import safe_token
from .options import CoreOptions
from .runtime import BrokerState, OperationTimeout, check_reachable, runtime

logger = logging.getLogger("funboost.nats")

MODE_HEADER = "Funboost-Mode"  # "receipt": answer on arrival; "call": answer with the final status
_RETRYABLE = (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
              nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError,
              nats.errors.StaleConnectionError)


class _NobodyListens(Exception):
    """No member in the queue group at publish time."""


# messages published while nobody listened, still being offered (waited for at interpreter exit)
_parked: set = set()
_atexit_registered = False


def _park(coro: Any) -> None:
    global _atexit_registered
    task = asyncio.ensure_future(coro)
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_wait_parked)
        on_graceful_exit(_wait_parked)  # a graceful stop that ends with os._exit skips atexit
    _parked.add(task)
    task.add_done_callback(_parked.discard)


def _wait_parked(timeout: float = 5.0) -> None:
    """At exit, give parked messages a few seconds to find a consumer (a publisher script that ends
    right after ``push`` would otherwise drop them)."""
    tasks = [t for t in _parked if not t.done()]
    if not tasks:
        return

    async def wait() -> None:
        await asyncio.wait(tasks, timeout=timeout)
    try:
        runtime().call(wait(), timeout=timeout + 1)
    except Exception:
        pass


@dataclass
class _State:
    nc: Client
    sub: Any = None
    buffer: collections.deque = field(default_factory=collections.deque)  # Delivery objects
    in_flight: int = 0
    closed: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition)


class NatsCoreBroker(Broker):
    kind = "nats_core"
    aliases = ("nats",)
    capabilities = Capabilities(
        at_least_once=False,  # a consumer's buffer dies with it
        persistent=False,  # nothing is stored on the server
        native_requeue=True,  # back into the local buffer
        dead_letter=True,  # published to <queue>_dlx (kept only while a dead-letter consumer listens)
        native_delay=False, priority=False,
        ordering="none",  # a queue group spreads messages over its members
        queue_size="none",  # the server does not count; a consumer only knows its own buffer
        in_flight_count=False, purge=True, broadcast=False, request_response=True, cross_process=True)
    options_model = CoreOptions

    def __init__(self, queue_name: str, options: Optional[CoreOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: CoreOptions
        self.subject = f"{self.options.subject_prefix}.{safe_token(queue_name)}"
        self._lock = threading.Lock()
        self._local: BrokerState[_State] = BrokerState(self._open)

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        opts = options if isinstance(options, CoreOptions) else cls.options_model()
        return check_reachable(opts.url, opts.connect_timeout)

    def _state(self, deadline: Optional[float] = None) -> _State:
        """This process's state, opened now if needed; by ``deadline`` (monotonic) when given."""
        return self._local.get(deadline)

    def _open(self, deadline: Optional[float]) -> _State:
        o = self.options
        return _State(nc=runtime().acquire(o.url, o.connect_timeout, o.reconnect_wait,
                                           timeout=None if deadline is None else deadline - time.monotonic()))

    # ------------------------------------------------------------------ consumer side
    def run_consumer(self, consumer: Any) -> bool:
        """Join the queue group before ``consume()`` returns, so that tasks pushed right after it are
        not published into a group with no member; the engine's fetch loop does the rest."""
        self._subscribe(self._state())
        return False

    def _subscribe(self, st: _State) -> None:
        with self._lock:
            if st.sub is not None:
                return

            async def on_message(msg: Msg) -> None:
                mode = (msg.headers or {}).get(MODE_HEADER)
                d = Delivery(body=msg.data, tag=None)
                if mode == "call" and msg.reply:
                    d.reply = self._replier(st, msg.reply)
                elif mode == "receipt" and msg.reply:
                    await st.nc.publish(msg.reply, b"")  # in our buffer now
                with st.cond:
                    st.buffer.append(d)
                    st.cond.notify()

            async def subscribe() -> Any:
                sub = await st.nc.subscribe(self.subject, queue=self.options.queue_group, cb=on_message,
                                            pending_msgs_limit=self.options.pending_msgs_limit)
                await st.nc.flush()  # the server knows the member before we return
                return sub
            st.sub = runtime().call(subscribe(), timeout=self.options.publish_timeout)

    def _replier(self, st: _State, reply_subject: str) -> Any:
        def reply(status: Any) -> None:
            data = json.dumps(status.to_dict(), ensure_ascii=False, default=repr).encode()
            runtime().call(st.nc.publish(reply_subject, data), timeout=self.options.publish_timeout)
        return reply

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        st = self._state()
        if st.sub is None:
            self._subscribe(st)
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        with st.cond:
            while not st.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or st.closed:
                    return out
                st.cond.wait(left)
            while st.buffer and len(out) < max_count:
                out.append(st.buffer.popleft())
            st.in_flight += len(out)
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        st = self._state()
        with st.cond:
            st.in_flight = max(0, st.in_flight - len(deliveries))

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        st = self._state()
        with st.cond:
            st.in_flight = max(0, st.in_flight - len(deliveries))
            st.buffer.extendleft(reversed(list(deliveries)))
            st.cond.notify_all()

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Dead letters are published fire-and-forget to the subject of ``<queue>_dlx``: a missing
        dead-letter consumer must not block the consumer that rejects."""
        if not deliveries:
            return
        st = self._state()
        dlx_subject = f"{self.options.subject_prefix}.{safe_token(self.queue_name + '_dlx')}"

        async def send() -> None:
            for d in deliveries:
                await st.nc.publish(dlx_subject, annotate_dead_letter(d.body, reason).encode())
            await st.nc.flush()
        runtime().call(send(), timeout=self.options.publish_timeout)
        self.ack(deliveries)

    # ------------------------------------------------------------------ publisher side
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        # one deadline for connecting and sending
        deadline = time.monotonic() + self.options.publish_timeout
        try:
            st = self._state(deadline)
        except OperationTimeout as exc:
            raise OperationTimeout(f"NATS_CORE publish to {self.subject!r} failed within "
                                   f"{self.options.publish_timeout:g}s: {exc}") from None
        datas = [m.body.encode() if isinstance(m.body, str) else bytes(m.body) for m in messages]
        coro = (self._publish_confirmed(st, datas, deadline) if self.options.confirm_publish
                else self._publish_plain(st, datas, deadline))
        # the coroutines end by the deadline themselves; the margin only guards against a stuck loop
        runtime().call(coro, timeout=max(0.0, deadline - time.monotonic()) + 10,
                       what=f"NATS_CORE publish to {self.subject!r}")

    async def _publish_plain(self, st: _State, datas: list[bytes], deadline: float) -> None:
        for data in datas:
            await st.nc.publish(self.subject, data)
        await st.nc.flush(timeout=max(0.5, deadline - time.monotonic()))  # type: ignore[arg-type]

    async def _publish_confirmed(self, st: _State, datas: list[bytes], deadline: float) -> None:
        sem = asyncio.Semaphore(512)

        async def one(data: bytes) -> None:
            async with sem:
                try:
                    await self._request_receipt(st, data, deadline, park_if_nobody_listens=True)
                except _NobodyListens:
                    _park(self._deliver_parked(st, data))
        await asyncio.gather(*(one(d) for d in datas))

    async def _request_receipt(self, st: _State, data: bytes, deadline: float,
                               park_if_nobody_listens: bool = False) -> None:
        pause = 0.02
        while True:
            try:
                # a lost receipt means the message may arrive twice; a consumer never sees fewer
                await st.nc.request(self.subject, data, timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                                    headers={MODE_HEADER: "receipt"})
                return
            except _RETRYABLE as exc:
                if park_if_nobody_listens and isinstance(exc, nats.errors.NoRespondersError):
                    raise _NobodyListens() from None
                if time.monotonic() + pause >= deadline:
                    raise TimeoutError(f"NATS_CORE: no consumer of {self.queue_name!r} took the message "
                                       f"within {self.options.publish_timeout}s ({type(exc).__name__})") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def _deliver_parked(self, st: _State, data: bytes) -> None:
        """No consumer listened at publish time: keep trying in the background for publish_timeout
        (consumers are often started after the first publish), then drop the message loudly."""
        try:
            await self._request_receipt(st, data, time.monotonic() + self.options.publish_timeout)
        except Exception as exc:
            logger.error("NATS_CORE: message for %r dropped: %s", self.queue_name, exc)

    def sync_call(self, body: str, timeout: float) -> Any:
        """Run the function on a consumer of the queue group and return its result; raise
        :class:`funboost.RemoteTaskError` if it failed, ``TimeoutError`` if no answer came in time."""
        deadline = time.monotonic() + timeout
        try:
            st = self._state(deadline)
        except OperationTimeout as exc:
            raise OperationTimeout(f"sync_call on {self.queue_name!r}: {exc}") from None
        data = body.encode() if isinstance(body, str) else bytes(body)

        async def call() -> bytes:
            pause = 0.02
            nobody = False  # the last answer was "no responders": a timeout of the try at the deadline means the same
            while True:
                budget = deadline - time.monotonic()
                try:
                    resp = await st.nc.request(self.subject, data, timeout=max(0.01, budget),
                                               headers={MODE_HEADER: "call"})
                    return resp.data
                except nats.errors.NoRespondersError:  # no consumer yet: wait for one within the timeout
                    nobody = True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            f"no consumer of {self.queue_name!r} answered within {timeout:g}s") from None
                    await asyncio.sleep(min(pause, left))  # a last try at the deadline
                    pause = min(pause * 2, 0.5)
                except nats.errors.TimeoutError:
                    if nobody and budget <= 0.05:
                        # the last short try at the deadline ran out before "no responders" came back
                        raise TimeoutError(
                            f"no consumer of {self.queue_name!r} answered within {timeout:g}s") from None
                    raise TimeoutError(f"no answer from a consumer of {self.queue_name!r} within {timeout:g}s") from None
        # the coroutine ends by the deadline itself; the margin only guards against a stuck loop
        status = json.loads(runtime().call(call(), timeout=max(0.0, deadline - time.monotonic()) + 10,
                                           what=f"sync_call on {self.queue_name!r}"))
        if not status.get("success"):
            raise RemoteTaskError(status)
        return status.get("result")

    def queue_size(self) -> QueueSize:
        return QueueSize(ready=None)  # the server does not count; never a fake 0

    def purge(self) -> int:
        """Drop this consumer's buffered messages (other members' buffers are theirs)."""
        st = self._local.peek()
        if st is None:
            return 0
        with st.cond:
            n = len(st.buffer)
            st.buffer.clear()
        return n

    def close(self) -> None:
        super().close()
        with self._lock:  # a later call opens it again (a booster may publish after stop_consume)
            st = self._local.clear()
        if st is None:
            return
        with st.cond:
            st.closed = True
            st.cond.notify_all()
        if st.sub is not None:
            try:
                runtime().call(st.sub.unsubscribe(), timeout=5)
            except Exception as exc:
                logger.debug("unsubscribe: %s", exc)
        runtime().release(self.options.url)
