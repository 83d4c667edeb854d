"""``LocalQueue``: the in-process queue of one queue name.

Shared by the memory broker (the whole broker) and the server transports (grpc, tcp, http: the buffer a
consumer's server fills and ``fetch`` drains). It holds

* **ready** items, FIFO per priority (highest priority first);
* **delayed** items with an eta (epoch seconds), moved to ready when due;
* **in-flight** items by delivery tag (an int unique in the queue), until they are settled or requeued;

with an optional **capacity** (``offer`` takes only what fits: backpressure) and ``take`` that waits for
items up to a deadline. Items are opaque to the queue; ``deliver(item, tag)`` turns one into the
:class:`~funboost.plugins.broker.Delivery` handed to the engine.

Thread-safe. Paths that never wait take the plain mutex (a C-level ``with``); the condition that wraps
it is only notified when a ``take`` is actually waiting.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import Callable, Generic, Optional, Protocol, Sequence, TypeVar

from funboost.plugins.broker import Delivery

T = TypeVar("T")

__all__ = ["LocalQueue", "Scheduled"]


def _plain_delivery(item: object, tag: int) -> Delivery:
    return Delivery(item, tag)


class Scheduled(Protocol):
    """An item that carries its own scheduling, for :meth:`LocalQueue.put`."""

    priority: Optional[int]  # higher is taken first; None/0 = normal
    eta: Optional[float]  # epoch seconds before which it is not delivered; None = now


class LocalQueue(Generic[T]):
    """Ready + delayed + in-flight items of one queue, with delivery tags, a capacity and deadline waits.

    :param name: the queue name (for messages).
    :param capacity: most ready + delayed items held; ``None`` = unbounded. In-flight items do not count.
    :param deliver: builds the engine's ``Delivery`` from an item and its tag (default ``Delivery(item, tag)``).
    :param abandoned: ``abandoned(item)`` true = drop the item instead of delivering it (e.g. a call whose
        caller gave up).
    :param linger: after ``take`` had to wait and was woken, pause this long (without the lock) before taking
        a batch, so a publisher that is still publishing fills it: the consumer is not woken per message.
    """

    #: A publisher adding to a queue that a consumer in this process takes from, while more than this
    #: many items are ready, gives up the GIL (``time.sleep(0)``) once every :data:`YIELD_EVERY` items.
    #: A busy publishing thread otherwise keeps the GIL for whole switch intervals while the consumer's
    #: threads wait for it: the backlog grows by the whole publish rate, and every full garbage
    #: collection walks all of it (measured: 200,000 pushes, 5,350 run by the time the last was pushed;
    #: with the yield the consumer keeps up and the process used ~20 % less CPU per task). Never blocks.
    YIELD_BACKLOG = 1000
    YIELD_EVERY = 500

    def __init__(self, name: str, capacity: Optional[int] = None, *,
                 deliver: Callable[[T, int], Delivery] = _plain_delivery,
                 abandoned: Optional[Callable[[T], bool]] = None, linger: float = 0.0) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1 or None, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._deliver = deliver
        self._abandoned = abandoned
        self._linger = linger
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._waiting = 0  # takers blocked in _cond.wait
        self._default: deque[T] = deque()  # priority 0, the common case
        self._ready: dict[int, deque[T]] = {0: self._default}  # priority -> FIFO
        self._priorities: list[int] = [0]  # sorted, highest first
        self._delayed: list[tuple[float, int, int, T]] = []  # heap of (eta, seq, priority, item)
        self._in_flight: dict[int, T] = {}
        self._in_flight_priority: dict[int, int] = {}  # only tags whose item has a non-zero priority
        self._tags = itertools.count(1)  # next() is atomic in CPython: usable without the lock
        self._seq = itertools.count()
        self._consumed = False  # something in this process has taken from this queue
        self._since_yield = 0  # items added since the publisher last yielded the GIL

    # ------------------------------------------------------------------ internals (caller holds _mutex)
    def _ready_count(self) -> int:
        if len(self._ready) == 1:
            return len(self._default)
        return sum(len(q) for q in self._ready.values())

    def _push_ready(self, item: T, priority: int) -> None:
        if not priority:
            self._default.append(item)
            return
        q = self._ready.get(priority)
        if q is None:
            q = self._ready[priority] = deque()
            self._priorities = sorted(self._ready, reverse=True)
        q.append(item)

    def _promote_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, prio, item = heapq.heappop(delayed)
            self._push_ready(item, prio)

    def _append_ready(self, items: Sequence[T]) -> None:
        """Add ready items at the normal priority without taking the mutex (the publishing hot path).

        A publisher that held the mutex could be switched out by the interpreter in the middle of its
        Python-level work; a consumer's ``take`` then blocked on the mutex, gave up the GIL and had to win
        it back behind the busy publisher. ``deque.extend`` is atomic under the GIL, and no wake-up is
        lost: a taker counts itself in ``_waiting`` *before* its last look at the queue (see ``take``),
        and this reads ``_waiting`` *after* adding."""
        self._default.extend(items)
        if self._waiting:
            with self._mutex:
                self._cond.notify(len(items))
        elif self._consumed and len(self._default) > self.YIELD_BACKLOG:
            self._since_yield += len(items)
            if self._since_yield >= self.YIELD_EVERY:
                self._since_yield = 0
                time.sleep(0)  # lets the consumer's threads have the GIL (see YIELD_BACKLOG)

    def _wake(self, n: int) -> None:
        if self._waiting and n:
            self._cond.notify(n)

    # ------------------------------------------------------------------ producers
    def offer(self, items: Sequence[T], priority: int = 0, eta: Optional[float] = None) -> int:
        """Add as many of ``items`` as fit (all when unbounded); return how many were added.

        ``priority``: higher is taken first. ``eta``: epoch seconds before which the items are not
        delivered (``None`` or a past time = ready now)."""
        if self.capacity is None and not priority and eta is None:  # the memory broker's hot path
            self._append_ready(items)
            return len(items)
        with self._mutex:
            if self.capacity is not None:
                room = self.capacity - self._ready_count() - len(self._delayed)
                if room <= 0:
                    return 0
                if len(items) > room:
                    items = items[:room]
            if eta is not None and eta > time.time():
                seq = self._seq
                for item in items:
                    heapq.heappush(self._delayed, (eta, next(seq), priority, item))
                self._wake(1)  # a waiting taker shortens its wait to the new eta
            else:
                if priority:
                    for item in items:
                        self._push_ready(item, priority)
                else:
                    self._default.extend(items)
                self._wake(len(items))
            return len(items)

    def put(self, items: Sequence[T]) -> None:
        """Add every item (no capacity check) at its own ``priority`` and ``eta`` attributes (see
        :class:`Scheduled`; ``OutgoingMessage`` has them): ``eta`` None or past = ready now."""
        for item in items:
            if item.eta is not None or item.priority:  # type: ignore[attr-defined]
                break
        else:  # the common case: ready now at the normal priority
            self._append_ready(items)
            return
        with self._mutex:
            default = self._default
            for item in items:
                eta = item.eta  # type: ignore[attr-defined]
                if eta is not None and eta > time.time():
                    heapq.heappush(self._delayed, (eta, next(self._seq), item.priority or 0, item))  # type: ignore[attr-defined]
                elif item.priority:  # type: ignore[attr-defined]
                    self._push_ready(item, item.priority)  # type: ignore[attr-defined]
                else:
                    default.append(item)
            if self._waiting:
                self._cond.notify(len(items))

    def put_evicting(self, item: T) -> Optional[T]:
        """Add ``item`` even when full by dropping the oldest ready item, which is returned (a dead-letter
        buffer must never block the consumer that rejects)."""
        with self._mutex:
            dropped: Optional[T] = None
            if self.capacity is not None and self._ready_count() + len(self._delayed) >= self.capacity:
                for prio in reversed(self._priorities):  # the lowest priority's oldest goes first
                    if self._ready[prio]:
                        dropped = self._ready[prio].popleft()
                        break
            self._default.append(item)
            self._wake(1)
            return dropped

    # ------------------------------------------------------------------ consumers
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_count`` ready items (highest priority first, FIFO within one), waiting up to
        ``timeout`` seconds for the first one. Taken items are in flight under a new tag."""
        if max_count <= 0:
            return []
        deadline: Optional[float] = None
        waited = False
        with self._mutex:
            while True:
                if self._delayed:
                    self._promote_due(time.time())
                ready = len(self._default) if len(self._ready) == 1 else self._ready_count()
                if ready:
                    # linger only when woken for fewer items than wanted; a full batch is taken at once
                    if not (waited and self._linger and 1 < max_count and ready < max_count):
                        out = self._take_locked(max_count)
                        if out:
                            return out
                    else:
                        break
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._delayed:  # wake up when the next delayed item is due
                    remaining = min(remaining, max(0.001, self._delayed[0][0] - time.time()))
                self._waiting += 1
                try:
                    # counted in _waiting first, then a last look: an item added without the mutex
                    # (_append_ready) before this look is seen here, one added after it is notified
                    if not self._default:
                        self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
                waited = True
        time.sleep(self._linger)  # see ``linger``: outside the lock, not woken per message
        with self._mutex:
            if self._delayed:
                self._promote_due(time.time())
            return self._take_locked(max_count)

    def _take_locked(self, max_count: int) -> list[Delivery]:
        self._consumed = True
        out: list[Delivery] = []
        in_flight = self._in_flight
        deliver = self._deliver
        abandoned = self._abandoned
        tags = self._tags
        if abandoned is None and len(self._ready) == 1:  # one priority, nothing to skip: the hot path
            q = self._default
            for _ in range(min(max_count, len(q))):
                item = q.popleft()
                tag = next(tags)
                in_flight[tag] = item
                out.append(deliver(item, tag))
            return out
        for prio in self._priorities:
            q = self._ready[prio]
            while q and len(out) < max_count:
                item = q.popleft()
                if abandoned is not None and abandoned(item):
                    continue
                tag = next(tags)
                in_flight[tag] = item
                if prio:
                    self._in_flight_priority[tag] = prio
                out.append(deliver(item, tag))
            if len(out) >= max_count:
                break
        return out

    def track(self, item: T) -> Delivery:
        """Put ``item`` in flight directly (it is run without passing through ready, e.g. inline)."""
        tag = next(self._tags)
        with self._mutex:
            self._in_flight[tag] = item
        return self._deliver(item, tag)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget these in-flight deliveries (the items are not needed: cheaper than :meth:`settle`)."""
        with self._mutex:
            pop = self._in_flight.pop
            for d in deliveries:
                pop(d.tag, None)
            if self._in_flight_priority:
                for d in deliveries:
                    self._in_flight_priority.pop(d.tag, None)

    def settle(self, tags: Sequence[int]) -> list[T]:
        """Forget these in-flight deliveries (ack, reject); return their items (unknown tags are skipped)."""
        with self._mutex:
            pop = self._in_flight.pop
            out = [pop(t, None) for t in tags]
            if self._in_flight_priority:
                for t in tags:
                    self._in_flight_priority.pop(t, None)
        return [x for x in out if x is not None]

    def requeue(self, tags: Sequence[int]) -> int:
        """Move these in-flight deliveries back to ready (at the end, with their priority); return how many."""
        with self._mutex:
            n = 0
            for t in tags:
                item = self._in_flight.pop(t, None)
                if item is not None:
                    self._push_ready(item, self._in_flight_priority.pop(t, 0))
                    n += 1
            self._wake(n)
            return n

    def requeue_replaced(self, tag: int, replace: Callable[[T], T]) -> bool:
        """Move one in-flight delivery back to ready (at the end, with its priority) as ``replace(item)``;
        False if ``tag`` is not in flight."""
        with self._mutex:
            item = self._in_flight.pop(tag, None)
            if item is None:
                return False
            self._push_ready(replace(item), self._in_flight_priority.pop(tag, 0))
            self._wake(1)
            return True

    # ------------------------------------------------------------------ whole queue
    def purge(self) -> list[T]:
        """Drop every ready and delayed item; return them (in-flight items stay)."""
        with self._mutex:
            dropped: list[T] = []
            for prio in self._priorities:
                dropped.extend(self._ready[prio])
                self._ready[prio].clear()
            dropped.extend(e[3] for e in self._delayed)
            self._delayed.clear()
            return dropped

    def drain(self) -> list[T]:
        """Remove and return every item: ready, delayed and in flight (the queue is closing)."""
        dropped = self.purge()
        with self._mutex:
            dropped.extend(self._in_flight.values())
            self._in_flight.clear()
            self._in_flight_priority.clear()
        return dropped

    def counts(self) -> tuple[int, int, int]:
        """``(ready, in_flight, delayed)``."""
        with self._mutex:
            return self._ready_count(), len(self._in_flight), len(self._delayed)

    def __len__(self) -> int:
        """Ready + delayed items (what counts against the capacity)."""
        with self._mutex:
            return self._ready_count() + len(self._delayed)

    def __repr__(self) -> str:
        ready, in_flight, delayed = self.counts()
        return (f"<LocalQueue {self.name!r} ready={ready} in_flight={in_flight} delayed={delayed} "
                f"capacity={self.capacity}>")
