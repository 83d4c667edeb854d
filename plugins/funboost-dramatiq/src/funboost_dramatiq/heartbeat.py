"""Crash reclaim on dramatiq's Redis broker, made prompt and safe for long tasks.

What dramatiq's ``RedisBroker`` does (dispatch.lua): every command it sends (enqueue, fetch, ack ...)
stamps the sender's ``broker_id`` in the ``__heartbeats__`` sorted set; a fetched message's id goes to
the ``__acks__.<broker_id>.<queue>`` set until acked. One command in a thousand (``maintenance_chance``)
also runs *maintenance* for the command's queue: the unacked messages of every broker whose heartbeat
is older than ``heartbeat_timeout`` (60 s by default) are pushed back onto the queue.

Two gaps for funboost's guarantee: maintenance is left to chance (an idle worker polling once a second
takes minutes on average to reclaim a SIGKILLed worker's messages), and a worker whose threads are all
busy with long tasks sends no command at all, so a second worker's maintenance can take its running
messages after ``heartbeat_timeout`` and run them twice.

:class:`RedisHeartbeat` closes both on the process's liveness ticker: every ``heartbeat_timeout / 5``
seconds it sends, for each queue (and delay queue) this dramatiq broker holds messages of, one
dispatch call with a command dispatch.lua does not know (so it does nothing but stamp the heartbeat)
and maintenance forced on. A living holder is therefore never older than a fifth of the timeout, and a
dead one's messages come back about ``heartbeat_timeout`` after its death.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

from dramatiq.common import current_millis, dq_name

from funboost.engine.liveness import Tick, ticker

if TYPE_CHECKING:  # pragma: no cover
    from dramatiq.brokers.redis import RedisBroker

BEATS_PER_TIMEOUT = 5
#: a command name dispatch.lua has no branch for: heartbeat (+ forced maintenance) only
_COMMAND = "funboost_heartbeat"


class RedisHeartbeat:
    def __init__(self, broker: "RedisBroker") -> None:
        self.broker = broker
        self._queues: set[str] = set()
        self._lock = threading.Lock()
        self._tick: Optional[Tick] = None

    def watch(self, queue: str) -> None:
        """Keep ``queue`` (and its delay queue) maintained and this broker's heartbeat alive for it."""
        with self._lock:
            self._queues.update((queue, dq_name(queue)))
            if self._tick is None:
                period = max(0.2, self.broker.heartbeat_timeout / 1000 / BEATS_PER_TIMEOUT)
                self._tick = ticker().every(period, self.beat, retry_after=0.5,
                                            name=f"funboost-dramatiq heartbeat {self.broker.broker_id}")

    def beat(self) -> int:
        """One heartbeat and one maintenance pass per watched queue; returns the number of queues."""
        b = self.broker
        with self._lock:
            queues = sorted(self._queues)
        dispatch = b.scripts["dispatch"]
        for queue in queues:
            # argument order of dispatch.lua (dramatiq 1.x and 2.x):
            # command, timestamp, queue, broker id, heartbeat timeout, dead message ttl, do_maintenance, max unpack
            dispatch(keys=[b.namespace], args=[_COMMAND, current_millis(), queue, b.broker_id, b.heartbeat_timeout,
                                               b.dead_message_ttl, 1, b._max_unpack_size()])
        return len(queues)

    def cancel(self) -> None:
        with self._lock:
            tick, self._tick = self._tick, None
        if tick is not None:
            tick.cancel(wait=False)
