"""``ConsumerHost``: the typed surface of the engine that a broker may touch.

A broker that owns its consume loop (``Broker.run_consumer``: a foreign framework's worker, a server
transport) gets the consumer as a :class:`ConsumerHost`. It may use exactly these members; anything
else on the engine's ``Consumer`` is private and may change. Static type checkers verify that the
engine's ``Consumer`` satisfies this protocol (see ``core/tests/test_host_protocol.py``).
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.status import FunctionResultStatus
    from funboost.params import BoosterParams
    from funboost.plugins.broker import Broker, Delivery


@runtime_checkable
class ConsumerHost(Protocol):
    """What a broker's ``run_consumer`` or a foreign worker may use of the consumer of one queue."""

    #: the queue's validated parameters (queue_name, concurrent_mode, concurrent_num, qps, …)
    params: "BoosterParams"
    #: the queue's logger (``funboost.<queue_name>``)
    logger: logging.Logger
    #: this consumer's id (host:pid:random), as in heartbeats
    consumer_id: str
    #: the broker instance this consumer fetches from and acks to
    broker: "Broker"

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` was called: stop taking new messages."""
        ...

    @property
    def stop_event(self) -> threading.Event:
        """Set when the consumer stops; wait on it instead of sleeping."""
        ...

    @property
    def paused(self) -> bool:
        """The queue is paused (remote pause flag)."""
        ...

    @property
    def current_qps(self) -> float:
        """The rate this consumer holds now (0 = unlimited): the configured qps, or its share of a
        distributed qps, or a value set remotely."""
        ...

    @property
    def concurrency(self) -> int:
        """How many tasks this consumer runs at once (1 in ``single_thread`` mode)."""
        ...

    @property
    def runs_inline(self) -> bool:
        """True when ``execute_inline`` may be called from several foreign threads at once and runs the
        function in the calling thread (threading and single_thread modes); False for async / gevent /
        eventlet, where a broker should hand deliveries to ``handle_delivery`` instead."""
        ...

    def is_runnable(self) -> bool:
        """Not stopped, not paused, and inside the run-time window: may a task start now?"""
        ...

    def wait_until_runnable(self, stop: Optional[threading.Event] = None) -> bool:
        """Block while paused or outside the run-time window; False if stopping (``stop`` or the
        consumer's own stop event)."""
        ...

    def execute_inline(self, delivery: "Delivery", *, slot_reserved: bool = False) -> Optional["FunctionResultStatus"]:
        """Run one delivery through every control (kill list, expiry, delay, filter, qps) and the
        runner in the calling thread. Returns the final status, or None when it did not run (filtered,
        expired, killed, malformed: already recorded / dead-lettered). Settles the delivery through the
        broker unless ``delivery.auto_ack`` is set. Counted as one of the consumer's running tasks
        (``stop()`` waits for it); ``slot_reserved``: the caller took that slot with :meth:`reserve_slot`,
        and it is given back here."""
        ...

    def reserve_slot(self) -> bool:
        """Take one of the consumer's ``concurrent_num`` slots, if one is free, for a run this thread is
        about to make with ``execute_inline(d, slot_reserved=True)``. False: none free (buffer the message
        and let the consumer's own dispatch take it)."""
        ...

    def handle_delivery(self, delivery: "Delivery") -> None:
        """Hand one delivery to the engine's ordinary path (controls, executor, runner, batched ack);
        returns at once."""
        ...
