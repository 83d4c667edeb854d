"""``PythonQueues.get_queue(name)``: the memory broker's queue of that name (``MEMORY_QUEUE`` /
``LOCAL_PYTHON_QUEUE``), as the original exposed its ``queue.Queue`` objects: for looking at its size."""
from __future__ import annotations

from funboost.brokers.memory import _queue
from funboost.transport.local_queue import LocalQueue


class MemoryQueueView:
    """The size of one memory queue. Messages are taken by consumers only (taking one here would bypass
    acks and every funboost control)."""

    def __init__(self, queue: LocalQueue) -> None:
        self._queue = queue

    def qsize(self) -> int:
        """Ready messages (delayed and in-flight ones not counted, as a ``queue.Queue`` would hold them)."""
        return self._queue.counts()[0]

    def empty(self) -> bool:
        return self.qsize() == 0

    def clear(self) -> int:
        """Drop every waiting message (ready and delayed); returns how many."""
        return len(self._queue.purge())


class PythonQueues:
    @classmethod
    def get_queue(cls, queue_name: str) -> MemoryQueueView:
        return MemoryQueueView(_queue(queue_name))
