"""The pull path of a framework-as-broker plugin: poll the framework's storage until a deadline, holding
messages that were fetched before their due time.

Frameworks keep delayed messages where a bare puller (``Broker.fetch``: the contract suite,
``replay_dead_letters``) either cannot skip them (Celery's eta travels in the message: the worker takes
it and holds it unacked) or must move them when due (dramatiq's delay queue). Both need the same loop:
pull, return what is due, otherwise sleep a short step, shorter when a held message falls due sooner,
until something arrived or the timeout ran out. :func:`poll_until` is that loop and :class:`HeldMessages`
the due-ordered hold.
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")

#: seconds between two polls of an empty queue (the cost of a pull against the latency of a bare puller)
POLL_INTERVAL = 0.05


class HeldMessages(Generic[T]):
    """Messages taken from the framework before their due time (``time.time()`` seconds), kept in due
    order. Not thread-safe: use it under the lock that guards the plugin's pull connection."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()  # ties in due time keep arrival order; items are never compared

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, due: float, item: T) -> None:
        """Keep ``item`` until ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def next_due(self) -> Optional[float]:
        """The earliest due time held, None when nothing is held."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, limit: Optional[int] = None, now: Optional[float] = None) -> list[T]:
        """Take the items due at ``now`` (default: the current time), earliest first, at most ``limit``."""
        now = time.time() if now is None else now
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            out.append(heapq.heappop(heap)[2])
        return out

    def clear(self) -> list[T]:
        """Drop everything held (the caller gives it back to the framework, e.g. by closing its channel);
        returns what was held."""
        items = [entry[2] for entry in self._heap]
        self._heap.clear()
        return items


def poll_until(pull: Callable[[], list[T]], timeout: float, *, held: Optional[HeldMessages] = None,
               interval: float = POLL_INTERVAL, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> list[T]:
    """Call ``pull`` until it returns a non-empty list or ``timeout`` seconds passed; return that list
    (empty at the deadline). ``pull`` is called at least once, also with ``timeout`` 0.

    Between two empty pulls it sleeps ``interval`` seconds, never past the deadline and, with ``held``,
    never past the moment the earliest held message falls due (``pull`` is expected to hand out or move
    the due ones). ``sleep`` and ``clock`` are for tests.
    """
    deadline = clock() + max(0.0, timeout)
    while True:
        out = pull()
        left = deadline - clock()
        if out or left <= 0:
            return out
        wait = min(interval, left)
        due = held.next_due() if held is not None else None
        if due is not None:
            wait = max(0.0, min(wait, due - time.time()))
        sleep(wait)
