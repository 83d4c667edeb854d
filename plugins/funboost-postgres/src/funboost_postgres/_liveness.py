"""Heartbeat ticker for liveness-based reclaim (isolated on purpose).

Interim module: funboost core is getting ``funboost.engine.liveness`` (one heartbeat / lease ticker for the
engine and for list-like brokers). Until it is on main, this plugin keeps the part that is not SQL here,
small and self-contained, so switching is a one-import change. Nothing in it knows about PostgreSQL.

A :class:`HeartbeatTicker` calls ``beat(owner)`` every ``interval`` seconds on a daemon thread. It holds
the owner only through a weak reference (a broker that is garbage-collected stops its own heartbeat), and
a failed beat is logged and retried at the next tick: the timeout on the other side allows several misses.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Callable, Generic, Optional, TypeVar

logger = logging.getLogger("funboost.liveness")

Owner = TypeVar("Owner")


def check_liveness_timing(interval: float, timeout: float) -> None:
    """A peer is declared dead after ``timeout`` without a beat: it must allow at least two missed beats."""
    if timeout <= interval * 2:
        raise ValueError("heartbeat_timeout must be more than twice heartbeat_interval")


class HeartbeatTicker(Generic[Owner]):
    def __init__(self, owner: Owner, beat: Callable[[Owner], None], interval: float, name: str) -> None:
        self._ref = weakref.ref(owner)
        self._beat = beat
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            owner = self._ref()
            if owner is None:
                return
            try:
                self._beat(owner)
            except Exception as exc:  # a missed beat is survivable
                logger.warning("%s: heartbeat failed: %s", self._thread.name if self._thread else "?", exc)
            del owner  # never keep the owner alive while sleeping

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, join_timeout: float = 5.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(join_timeout)
