"""Deadline replies for calls a server runs inline: the handler thread that runs the user's function cannot
answer at the caller's deadline itself, so one watcher thread per server does, and whichever of the two
comes first owns the reply.

:meth:`DeadlineWatch.watch` registers ``on_expire`` (it sends the framing's deadline error) for a deadline;
:meth:`DeadlineWatch.claim` is called by the handler when its call is done: True means the handler still
owns the reply (send the result), False that the watcher already answered (send nothing). The two race
through one atomic ``dict.pop``, so exactly one reply is ever sent.

Cheap on the hot path: a heap push and a dict insert per call, no wake-up of the watcher unless the new
deadline is the earliest; claimed entries are dropped lazily when their deadline comes, and the watcher
wakes at most every :data:`RESOLUTION` seconds while calls come in.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

logger = logging.getLogger("funboost.transport")

__all__ = ["DeadlineWatch", "RESOLUTION"]

#: the watcher answers at most this late (seconds); it also bounds how often it wakes under load
RESOLUTION = 0.01


class DeadlineWatch:
    """Deadline replies of one server (see the module docstring). The thread starts at the first watch."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition(threading.Lock())
        self._next_wake = float("inf")  # when the watcher wakes next (monotonic); inf while it waits idle
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, timeout: float, on_expire: Callable[[], None]) -> int:
        """Call ``on_expire`` in ``timeout`` seconds unless :meth:`claim` comes first; return the token."""
        token = next(self._ids)
        deadline = time.monotonic() + timeout
        self._live[token] = on_expire
        with self._cond:
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self._name}-deadlines", daemon=True)
                self._thread.start()
            elif deadline < self._next_wake - RESOLUTION:
                self._cond.notify()
        return token

    def claim(self, token: int) -> bool:
        """The handler's call is done: True if it still owns the reply, False if the deadline reply was sent."""
        return self._live.pop(token, None) is not None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        heap, live, cond = self._heap, self._live, self._cond
        while True:
            expired = []
            with cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    while heap and heap[0][0] <= now:
                        token = heapq.heappop(heap)[1]
                        on_expire = live.pop(token, None)  # None: claimed by its handler already
                        if on_expire is not None:
                            expired.append(on_expire)
                    if expired:
                        break
                    self._next_wake = max(heap[0][0], now + RESOLUTION) if heap else float("inf")
                    cond.wait(None if not heap else self._next_wake - now)
            for on_expire in expired:  # outside the lock: a reply may block on a slow client
                try:
                    on_expire()
                except Exception:  # noqa: BLE001 - a connection that closed meanwhile, say
                    logger.debug("funboost transport: deadline reply failed", exc_info=True)
