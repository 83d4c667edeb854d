"""Contiguous completion tracking: which prefix of a stream of handed-out positions is finished.

Log-like brokers (Kafka partitions, a MySQL binlog) keep one resume point per stream: "everything
before this is done". The engine finishes tasks out of order (many run at once), so checkpointing the
position of the latest finished item would lose the unfinished ones before it if the process dies.
:class:`ContiguousTracker` records the positions handed out (in increasing order) and the ones
finished; the safe resume point is the lowest position still unfinished, or one past the last handed
out when none is. Positions are integers that increase in hand-out order (Kafka offsets, or a local
sequence number that a broker maps to its own coordinates).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional


class ContiguousTracker:
    """Thread-safe: ``add`` is called by the fetching thread, ``done`` by any thread."""

    __slots__ = ("_lock", "_pending", "_done", "_next", "committed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[int] = deque()  # handed out, in increasing order, not yet known done
        self._done: set[int] = set()  # finished positions still behind an unfinished one
        self._next: Optional[int] = None  # one past the last handed-out position
        self.committed: Optional[int] = None  # the last safe position the owner checkpointed

    def add(self, position: int) -> None:
        with self._lock:
            self._pending.append(position)
            self._next = position + 1

    def add_many(self, positions: list[int]) -> None:
        """``add`` for several positions in increasing order, under one lock acquisition."""
        if positions:
            with self._lock:
                self._pending.extend(positions)
                self._next = positions[-1] + 1

    def done(self, position: int) -> None:
        with self._lock:
            self._done_locked(position)

    def done_many(self, positions: list[int]) -> None:
        """``done`` for several positions (any order), under one lock acquisition."""
        with self._lock:
            for position in positions:
                self._done_locked(position)

    def _done_locked(self, position: int) -> None:
        pending = self._pending
        if pending and pending[0] == position:
            pending.popleft()
            # drain finished positions that were waiting behind this one
            done = self._done
            while pending and done and pending[0] in done:
                done.discard(pending.popleft())
        elif pending and position > pending[0]:
            self._done.add(position)

    def safe_offset(self) -> Optional[int]:
        """The first position not known finished (where a restart resumes), or None if nothing was
        handed out."""
        with self._lock:
            if self._pending:
                return self._pending[0]
            return self._next

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending) - len(self._done)

    def to_commit(self) -> Optional[int]:
        """The safe position if it moved past what was last committed, else None."""
        off = self.safe_offset()
        if off is None or (self.committed is not None and off <= self.committed):
            return None
        return off
