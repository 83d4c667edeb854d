"""One background thread per process that keeps the heartbeat keys of this process's consumers alive and
periodically gives back the in-flight work of dead consumers.

A consumer's heartbeat key lives ``heartbeat_timeout`` seconds and is refreshed every
``heartbeat_interval`` seconds from here, independently of how long tasks run: as long as the process
lives, its work is never handed to someone else. SIGKILL stops the refreshes; the key expires and the
next reclaim pass (any consumer of the queue, at most one per ``reclaim_interval``) requeues the work.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

logger = logging.getLogger("funboost.redis")


class _Member(Protocol):
    def _beat(self) -> None: ...

    def _reclaim(self) -> Any: ...


class _Entry:
    __slots__ = ("ref", "interval", "reclaim_interval", "next_beat", "next_reclaim")

    def __init__(self, member: Any, interval: float, reclaim_interval: float) -> None:
        self.ref = weakref.ref(member)
        self.interval = interval
        self.reclaim_interval = reclaim_interval
        self.next_beat = time.monotonic() + interval
        self.next_reclaim = time.monotonic() + reclaim_interval


class HeartbeatThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_log = 0.0

    def add(self, member: Any, interval: float, reclaim_interval: float) -> None:
        with self._lock:
            self._entries[id(member)] = _Entry(member, interval, reclaim_interval)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="funboost-redis-heartbeat",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, member: Any) -> None:
        with self._lock:
            self._entries.pop(id(member), None)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                entries = list(self._entries.items())
            now = time.monotonic()
            next_due = now + 1.0
            for key, e in entries:
                m = e.ref()
                if m is None:
                    with self._lock:
                        self._entries.pop(key, None)
                    continue
                try:
                    if now >= e.next_beat:
                        e.next_beat = now + e.interval
                        m._beat()
                    if now >= e.next_reclaim:
                        e.next_reclaim = now + e.reclaim_interval
                        m._reclaim()
                except Exception as exc:  # a redis outage must not kill the thread
                    if now - self._last_log > 5.0:  # one line per 5 s during an outage, not per retry
                        self._last_log = now
                        logger.warning("redis heartbeat/reclaim for %s failed: %s: %s",
                                       getattr(m, "queue_name", "?"), type(exc).__name__, exc)
                    # retry soon, not after a whole interval: the key may be close to expiry
                    e.next_beat = min(e.next_beat, now + 0.2)
                next_due = min(next_due, e.next_beat, e.next_reclaim)
            self._wake.wait(max(0.01, next_due - time.monotonic()))


_instance = HeartbeatThread()


def heartbeats() -> HeartbeatThread:
    return _instance


def _after_fork_in_child() -> None:
    # threads do not survive fork; the child's consumers register again on their first fetch
    global _instance
    _instance = HeartbeatThread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
