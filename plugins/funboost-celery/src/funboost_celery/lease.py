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
current time every ``visibility_timeout / 5`` seconds, on the process's liveness ticker
(``ZADD XX``: a message acked or restored meanwhile is never re-added). A living holder's messages are
therefore never older than that period, whatever their task takes; a dead holder stops renewing and
its messages are restored about ``visibility_timeout`` seconds after it died. A message restored
anyway (the holder stalled for a whole timeout: SIGSTOP, a frozen VM, host clocks more than the
timeout apart) runs again: the usual at-least-once duplicate, never a loss.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from funboost.engine.liveness import Tick, ticker

#: renew each holder's messages this many times per visibility timeout
RENEWALS_PER_TIMEOUT = 5


def renew_leases(chan: Optional[Any]) -> int:
    """Re-score the unacked messages a kombu Redis channel holds with the current time; how many."""
    qos = getattr(chan, "qos", None)
    if chan is None or qos is None or not hasattr(chan, "unacked_index_key"):
        return 0  # not a Redis channel, or not open right now
    # list() of a dict with str keys runs without releasing the GIL: a consistent copy even while the
    # worker thread adds and removes deliveries
    tags = list(qos._delivered)
    if not tags:
        return 0
    now = time.time()  # the clock kombu scores with
    with chan.conn_or_acquire() as client:
        client.zadd(chan.unacked_index_key, {tag: now for tag in tags}, xx=True)
    return len(tags)


def keep_leases(renew: Callable[[], object], visibility_timeout: float, name: str) -> Tick:
    """Call ``renew`` (a bound method that calls :func:`renew_leases` on its holder's channel; the
    ticker holds it weakly, so a forgotten holder stops renewing) every ``visibility_timeout / 5``
    seconds until the returned tick is cancelled. A failed renewal (Redis away for a moment) is retried
    soon by the ticker."""
    period = max(0.2, visibility_timeout / RENEWALS_PER_TIMEOUT)
    return ticker().every(period, renew, retry_after=0.2, name=f"funboost-celery lease renewal ({name})")
