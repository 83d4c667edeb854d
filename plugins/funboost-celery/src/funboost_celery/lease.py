"""Leases on the Redis transport: a dead worker's messages come back within seconds, a living worker's
long task never does.

kombu's Redis transport moves a message it hands out into the ``unacked`` hash and scores it in the
``unacked_index`` sorted set with the time it was handed out. Any consumer of that Redis database puts
messages older than ``visibility_timeout`` back into their queue (``QoS.restore_visible``). Alone,
that forces a choice: a long timeout (Celery's hour) leaves a SIGKILLed worker's tasks stranded; a
short one hands a living worker's long task (or one it holds for an eta, or prefetched while paused)
to a second worker.

funboost-celery keeps the timeout short and turns the score into a lease: every process that holds
unacked messages (a Celery worker, a broker that pulled with ``fetch``) re-scores them with the
current time every ``visibility_timeout / 5`` seconds (``ZADD XX``: a message acked or restored
meanwhile is never re-added). A living holder's messages are therefore never older than that period,
whatever their task takes; a dead holder stops renewing and its messages are restored about
``visibility_timeout`` seconds after it died. A message restored anyway (the holder stalled for a
whole timeout: SIGSTOP, a frozen VM, host clocks more than the timeout apart) runs again: the usual
at-least-once duplicate, never a loss.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Hashable, Optional

logger = logging.getLogger("funboost.celery")

#: renew each holder's messages this many times per visibility timeout
RENEWALS_PER_TIMEOUT = 5
TICK_SECONDS = 0.5


class LeaseKeeper:
    """One thread per process renewing the unacked Redis messages of every channel it watches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[Hashable, Callable[[], Any]] = {}
        self._last: dict[Hashable, float] = {}
        self._thread: Optional[threading.Thread] = None

    def watch(self, owner: Hashable, channel: Callable[[], Any]) -> None:
        """Keep renewing what ``channel()`` (a kombu Redis channel, or None) holds until ``forget(owner)``."""
        with self._lock:
            self._sources[owner] = channel
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="funboost-celery-lease", daemon=True)
                self._thread.start()

    def forget(self, owner: Hashable) -> None:
        with self._lock:
            self._sources.pop(owner, None)
            self._last.pop(owner, None)

    def renew_now(self) -> int:
        """Renew every watched channel now; the number of messages renewed (tests, tools)."""
        with self._lock:
            sources = list(self._sources.items())
        return sum(self._renew(owner, channel, force=True) for owner, channel in sources)

    def _loop(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            with self._lock:
                sources = list(self._sources.items())
            for owner, channel in sources:
                try:
                    self._renew(owner, channel, force=False)
                except Exception as exc:  # Redis away for a moment: the next tick tries again
                    logger.warning("could not renew the leases of unacked messages: %s", exc)

    def _renew(self, owner: Hashable, get_channel: Callable[[], Any], force: bool) -> int:
        chan = get_channel()
        qos = getattr(chan, "qos", None)
        if qos is None or not hasattr(chan, "unacked_index_key"):
            return 0  # not a Redis channel (or not open right now)
        now = time.time()
        period = max(0.2, float(chan.visibility_timeout) / RENEWALS_PER_TIMEOUT)
        if not force and now - self._last.get(owner, 0.0) < period:
            return 0
        self._last[owner] = now
        # list() of a dict with str keys runs without releasing the GIL: a consistent copy even while
        # the worker thread adds and removes deliveries
        tags = list(qos._delivered)
        if not tags:
            return 0
        with chan.conn_or_acquire() as client:
            client.zadd(chan.unacked_index_key, {tag: now for tag in tags}, xx=True)
        return len(tags)


_keepers: dict[int, LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def lease_keeper() -> LeaseKeeper:
    """This process's lease keeper (a forked child gets its own: threads do not survive fork)."""
    pid = os.getpid()
    with _keepers_lock:
        keeper = _keepers.get(pid)
        if keeper is None:
            keeper = _keepers[pid] = LeaseKeeper()
        return keeper
