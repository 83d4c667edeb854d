"""MEMORY_QUEUE: an in-process queue, the reference implementation of the broker contract.

Publishers and consumers of one queue name in one process share one
:class:`~funboost.transport.local_queue.LocalQueue` (the same queue the server transports buffer in).
Nothing survives the process, so it declares ``at_least_once=False`` and ``persistent=False``; inside
the process it is fully featured: requeue, dead-letter, native delay, priorities, exact sizes.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, ClassVar, Sequence

from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.transport.local_queue import LocalQueue

_queues: dict[str, "LocalQueue[OutgoingMessage]"] = {}
_queues_lock = threading.Lock()


# task id -> callback of a publisher waiting in this process for the task's final status (get_future);
# called once, by the engine, when the task is final (after retries; requeues deliver it again)
_replies: dict[str, Callable[[Any], None]] = {}
_replies_lock = threading.Lock()


def _deliver(m: OutgoingMessage, tag: int) -> Delivery:
    d = Delivery(m.payload if m.payload is not None else m.body, tag)
    if _replies and m.task_id in _replies:
        d.reply = _reply_for(m.task_id)
    return d


def _reply_for(task_id: str) -> Callable[[Any], None]:
    def reply(status: Any) -> None:
        with _replies_lock:
            callback = _replies.pop(task_id, None)
        if callback is not None:
            callback(status)
    return reply


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
    aliases: ClassVar[tuple[str, ...]] = ("memory_queue", "local_python_queue")
    accepts_payload = True
    fetch_is_local = True
    capabilities = Capabilities(
        at_least_once=False, persistent=False, native_requeue=True, dead_letter=True,
        native_delay=True, priority=True, ordering="priority", queue_size="exact",
        in_flight_count=True, purge=True, broadcast=False, cross_process=False, max_priority=2**31)

    def __init__(self, queue_name: str, options=None) -> None:
        super().__init__(queue_name, options)
        self._q = _queue(queue_name)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._q.put(messages)  # the queue reads each message's priority and eta

    def publish_with_reply(self, message: OutgoingMessage, callback: Callable[[Any], None]) -> None:
        """Publish one message; ``callback(status)`` runs once, in the consuming thread, with the task's
        final FunctionResultStatus (``Booster.get_future``)."""
        with _replies_lock:
            _replies[message.task_id] = callback
        try:
            self._q.put([message])
        except BaseException:
            with _replies_lock:
                _replies.pop(message.task_id, None)
            raise

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
        dropped = self._q.purge()
        if _replies:  # nobody will run these: their futures would wait forever
            with _replies_lock:
                for m in dropped:
                    _replies.pop(getattr(m, "task_id", ""), None)
        return len(dropped)
