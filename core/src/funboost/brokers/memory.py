"""MEMORY_QUEUE: an in-process queue, the reference implementation of the broker contract.

Publishers and consumers of one queue name in one process share a :class:`_MemoryQueueState`.
Nothing survives the process, so it declares ``at_least_once=False`` and ``persistent=False``; inside
the process it is fully featured: requeue, dead-letter, native delay, priorities, exact sizes.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import Sequence

from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize

_states: dict[str, "_MemoryQueueState"] = {}
_states_lock = threading.Lock()
_seq = itertools.count()


class _MemoryQueueState:
    def __init__(self) -> None:
        # ``lock`` is taken directly on the hot paths (a C-level context manager); ``cond`` wraps the
        # same lock and is only notified when a fetcher is actually waiting (``waiting``)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.waiting = 0
        self.ready: dict[int, deque] = {0: deque()}  # priority -> FIFO
        self.priorities: list[int] = [0]  # sorted, highest first
        self.delayed: list[tuple[float, int, OutgoingMessage]] = []
        self.in_flight: dict[int, OutgoingMessage] = {}

    def ready_count(self) -> int:
        return sum(len(q) for q in self.ready.values())

    def push_ready(self, msg: OutgoingMessage) -> None:
        prio = msg.priority or 0
        q = self.ready.get(prio)
        if q is None:
            q = self.ready[prio] = deque()
            self.priorities = sorted(self.ready, reverse=True)
        q.append(msg)

    def promote_due(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            self.push_ready(heapq.heappop(self.delayed)[2])


def _state(queue_name: str) -> _MemoryQueueState:
    st = _states.get(queue_name)
    if st is None:
        with _states_lock:
            st = _states.setdefault(queue_name, _MemoryQueueState())
    return st


class MemoryBroker(Broker):
    kind = "memory"
    aliases = ("memory_queue", "local_python_queue")
    accepts_payload = True
    capabilities = Capabilities(
        at_least_once=False, persistent=False, native_requeue=True, dead_letter=True,
        native_delay=True, priority=True, ordering="priority", queue_size="exact",
        in_flight_count=True, purge=True, broadcast=False, cross_process=False, max_priority=2**31)

    def __init__(self, queue_name: str, options=None) -> None:
        super().__init__(queue_name, options)
        self._st = _state(queue_name)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        st = self._st
        with st.lock:
            for m in messages:
                if m.eta is not None and m.eta > time.time():
                    heapq.heappush(st.delayed, (m.eta, next(_seq), m))
                elif m.priority:
                    st.push_ready(m)
                else:
                    st.ready[0].append(m)
            if st.waiting:
                st.cond.notify(len(messages))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        st = self._st
        deadline = time.monotonic() + timeout
        waited = False
        with st.lock:
            while True:
                if st.delayed:
                    st.promote_due(time.time())
                if st.ready_count():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if st.delayed:
                    remaining = min(remaining, max(0.001, st.delayed[0][0] - time.time()))
                st.waiting += 1
                try:
                    st.cond.wait(remaining)
                finally:
                    st.waiting -= 1
                waited = True
        if waited and max_count > 1:
            # woken by a publisher that is still publishing: a short pause (without the lock, and without
            # being woken per message) lets a batch accumulate, so the consumer is not woken per message
            time.sleep(0.0005)
        with st.lock:
            if st.delayed:
                st.promote_due(time.time())
            out: list[Delivery] = []
            in_flight = st.in_flight
            for prio in st.priorities:
                q = st.ready[prio]
                while q and len(out) < max_count:
                    m = q.popleft()
                    tag = next(_seq)
                    in_flight[tag] = m
                    out.append(Delivery(m.payload if m.payload is not None else m.body, tag))
                if len(out) >= max_count:
                    break
            return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        st = self._st
        with st.lock:
            pop = st.in_flight.pop
            for d in deliveries:
                pop(d.tag, None)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        st = self._st
        with st.cond:
            for d in deliveries:
                m = st.in_flight.pop(d.tag, None)
                if m is not None:
                    m.eta = None
                    st.push_ready(m)
            if st.waiting:
                st.cond.notify(len(deliveries))

    def queue_size(self) -> QueueSize:
        st = self._st
        with st.cond:
            return QueueSize(ready=st.ready_count(), in_flight=len(st.in_flight), delayed=len(st.delayed))

    def purge(self) -> int:
        st = self._st
        with st.cond:
            n = st.ready_count() + len(st.delayed)
            for q in st.ready.values():
                q.clear()
            st.delayed.clear()
            return n
