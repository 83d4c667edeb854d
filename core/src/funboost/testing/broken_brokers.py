"""Deliberately broken variants of the memory broker: the contract suite's self-test.

Each variant breaks one promise a real plugin could break by accident. The suite must fail every one of
them (``core/tests/test_contract_selftest.py`` runs it against each); ``EXPECTED_FAILURES`` names the
test that catches each variant. Certify one yourself::

    pytest --pyargs funboost.testing.contract --funboost-broker funboost.testing.broken_brokers:NoAckBroker

Never use these as brokers.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from typing import Sequence

from funboost.brokers.memory import MemoryBroker
from funboost.plugins.broker import Delivery, OutgoingMessage


class NoAckBroker(MemoryBroker):
    """``ack`` does nothing: acked messages stay in flight forever."""

    kind = "broken_no_ack"
    aliases = ()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pass


class OverFetchBroker(MemoryBroker):
    """``fetch`` ignores ``max_count`` and hands out everything that is ready."""

    kind = "broken_over_fetch"
    aliases = ()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        return super().fetch(max(max_count, 1) * 1000, timeout)


class ImpatientFetchBroker(MemoryBroker):
    """``fetch`` ignores its timeout and returns at once (the engine's loop then spins)."""

    kind = "broken_impatient_fetch"
    aliases = ()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        return super().fetch(max_count, 0.0)


class SleepyFetchBroker(MemoryBroker):
    """``fetch`` always sleeps its whole timeout out, even when a message arrives meanwhile."""

    kind = "broken_sleepy_fetch"
    aliases = ()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        time.sleep(timeout)
        return super().fetch(max_count, 0.0)


_LEASE_SECONDS = 2.0


class FixedLeaseBroker(MemoryBroker):
    """A fixed visibility timeout: a fetched message goes back to ready after 2 s unless acked, even
    while its consumer is alive and still working on it (a long task then runs twice)."""

    kind = "broken_fixed_lease"
    aliases = ()
    _leases: dict = {}
    _lease_lock = threading.Lock()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        self._expire_leases()
        out = super().fetch(max_count, min(timeout, _LEASE_SECONDS / 4))
        now = time.monotonic()
        with self._lease_lock:
            for d in out:
                self._leases[(id(self._q), d.tag)] = now + _LEASE_SECONDS
        return out

    def _expire_leases(self) -> None:
        now = time.monotonic()
        with self._lease_lock:
            due = [k for k, t in self._leases.items() if k[0] == id(self._q) and t <= now]
            for k in due:
                del self._leases[k]
        if due:
            self._q.requeue([tag for _, tag in due])


class LazyRequeueBroker(MemoryBroker):
    """Claims ``native_requeue`` but ``requeue`` does nothing: the message stays in flight until an
    8-second lease brings it back (so the engine's hand-back on stop is not prompt)."""

    kind = "broken_lazy_requeue"
    aliases = ()

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        deliveries = list(deliveries)
        timer = threading.Timer(8.0, lambda: MemoryBroker.requeue(self, deliveries))
        timer.daemon = True
        timer.start()


class ClaimsPersistentBroker(MemoryBroker):
    """Claims ``persistent`` (and, to look consistent, ``cross_process``); nothing outlives the process."""

    kind = "broken_claims_persistent"
    aliases = ()
    capabilities = dataclasses.replace(MemoryBroker.capabilities, persistent=True, cross_process=True)


class ClaimsCrossProcessBroker(MemoryBroker):
    """Claims ``cross_process``; publishers in another process reach nobody."""

    kind = "broken_claims_cross_process"
    aliases = ()
    capabilities = dataclasses.replace(MemoryBroker.capabilities, cross_process=True)


class LossyBroker(MemoryBroker):
    """Silently drops about one message in five on publish."""

    kind = "broken_lossy"
    aliases = ()

    _counter = itertools.count(1)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        super().publish([m for m in messages if next(self._counter) % 5])


# variant -> tests of the suite (module::class::test) that must fail for it
EXPECTED_FAILURES: dict[str, list[str]] = {
    "NoAckBroker": ["test_ack.py::TestAck::test_ack_releases_in_flight"],
    "OverFetchBroker": ["test_publish_consume.py::TestPublishConsume::test_fetch_respects_max_count"],
    "ImpatientFetchBroker": [
        "test_publish_consume.py::TestPublishConsume::test_fetch_waits_for_its_timeout_on_an_empty_queue"],
    "SleepyFetchBroker": ["test_publish_consume.py::TestPublishConsume::test_fetch_returns_when_a_message_arrives"],
    "FixedLeaseBroker": ["test_redelivery.py::TestRedelivery::test_living_consumer_keeps_its_long_task"],
    "LazyRequeueBroker": ["test_requeue.py::TestRequeue::test_native_requeue_releases_the_delivery_at_once"],
    "ClaimsPersistentBroker": ["test_persistence.py::TestPersistence::test_messages_outlive_the_publishing_process"],
    "ClaimsCrossProcessBroker": ["test_persistence.py::TestPersistence::test_message_from_another_process"],
    "LossyBroker": ["test_publish_consume.py::TestPublishConsume::test_publish_fetch_ack",
                    "test_engine.py::TestEngine::test_end_to_end_through_boost"],
}
