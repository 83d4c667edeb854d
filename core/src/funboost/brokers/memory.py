"""MEMORY_QUEUE: an in-process queue, the reference implementation of the broker contract.

Publishers and consumers of one queue name in one process share one
:class:`~funboost.transport.local_queue.LocalQueue` (the same queue the server transports buffer in).
Nothing survives the process, so it declares ``at_least_once=False`` and ``persistent=False``; inside
the process it is fully featured: requeue, dead-letter, native delay, priorities, exact sizes.
"""
from __future__ import annotations

import threading
from typing import Sequence

from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.transport.local_queue import LocalQueue

_queues: dict[str, "LocalQueue[OutgoingMessage]"] = {}
_queues_lock = threading.Lock()


def _deliver(m: OutgoingMessage, tag: int) -> Delivery:
    return Delivery(m.payload if m.payload is not None else m.body, tag)


def _queue(queue_name: str) -> "LocalQueue[OutgoingMessage]":
    q = _queues.get(queue_name)
    if q is None:
        with _queues_lock:
            q = _queues.get(queue_name)
            if q is None:
                # linger: a consumer woken by a publisher that is still publishing takes a batch, not one
                q = _queues[queue_name] = LocalQueue(queue_name, deliver=_deliver, linger=0.0005)
    return q


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
        self._q = _queue(queue_name)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._q.put(messages)  # the queue reads each message's priority and eta

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        return self._q.take(max_count, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._q.ack(deliveries)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        # a requeued message is ready now, at its priority (its eta has passed: it was delivered)
        self._q.requeue([d.tag for d in deliveries])

    def queue_size(self) -> QueueSize:
        ready, in_flight, delayed = self._q.counts()
        return QueueSize(ready=ready, in_flight=in_flight, delayed=delayed)

    def purge(self) -> int:
        return len(self._q.purge())
