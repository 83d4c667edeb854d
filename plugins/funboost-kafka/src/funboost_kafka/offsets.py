"""Per-partition bookkeeping of which fetched offsets are finished, to commit only safe offsets.

Tasks finish out of order (the engine runs many at once), but a Kafka group keeps one committed offset
per partition: "everything below this offset is done". Committing the offset of the latest finished
record would lose the unfinished ones before it if the process dies. So each partition tracks the
offsets handed out (in fetch order, which is offset order) and the ones finished; the safe commit
point is the lowest offset still unfinished, or one past the last fetched offset when none is.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional


class PartitionTracker:
    """Offsets of one assigned partition. ``add`` is called by the fetching thread, ``done`` by any
    thread; a tracker is replaced (never reused) when its partition is revoked and assigned again, so
    a late ``done`` for an old assignment is simply lost with the old tracker."""

    __slots__ = ("_lock", "_pending", "_done", "_next", "committed", "revoked")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[int] = deque()  # fetched, in offset order, not yet known done
        self._done: set[int] = set()  # finished offsets still behind an unfinished one
        self._next: Optional[int] = None  # one past the last fetched offset
        self.committed: Optional[int] = None  # last offset we committed for this assignment
        self.revoked = False

    def add(self, offset: int) -> None:
        with self._lock:
            self._pending.append(offset)
            self._next = offset + 1

    def add_many(self, offsets: list[int]) -> None:
        """``add`` for several offsets in increasing order, under one lock acquisition."""
        if offsets:
            with self._lock:
                self._pending.extend(offsets)
                self._next = offsets[-1] + 1

    def done(self, offset: int) -> None:
        with self._lock:
            self._done_locked(offset)

    def done_many(self, offsets: list[int]) -> None:
        """``done`` for several offsets (any order), under one lock acquisition."""
        with self._lock:
            for offset in offsets:
                self._done_locked(offset)

    def _done_locked(self, offset: int) -> None:
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            # drain finished offsets that were waiting behind this one
            done = self._done
            while pending and done and pending[0] in done:
                done.discard(pending.popleft())
        elif pending and offset > pending[0]:
            self._done.add(offset)

    def safe_offset(self) -> Optional[int]:
        """The offset to commit (next record to read after a restart), or None if nothing was fetched."""
        with self._lock:
            if self._pending:
                return self._pending[0]
            return self._next

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending) - len(self._done)

    def to_commit(self) -> Optional[int]:
        """The safe offset if it moved past what was last committed, else None."""
        off = self.safe_offset()
        if off is None or (self.committed is not None and off <= self.committed):
            return None
        return off
