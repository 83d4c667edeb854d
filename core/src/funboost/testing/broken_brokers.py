"""Deliberately broken variants of the memory broker: the contract suite's self-test.

Each variant breaks one promise a real plugin could break by accident. The suite must fail every one of
them (``core/tests/test_contract_selftest.py`` runs it against each); ``EXPECTED_FAILURES`` names the
test that catches each variant. Certify one yourself::

    pytest --pyargs funboost.testing.contract --funboost-broker funboost.testing.broken_brokers:NoAckBroker

Never use these as brokers.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import sqlite3
import threading
import time
from typing import Sequence

from funboost.brokers.memory import MemoryBroker
from funboost.paths import user_data_dir
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize


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


_racy_lock = threading.Lock()
_racy_claims: list = []  # (monotonic time, queue, fetching broker, deliveries) of the fetches of the last moment
_racy_tags = itertools.count(1)


class RacyClaimBroker(MemoryBroker):
    """``fetch`` claims in two steps that are not atomic together (a SELECT of the free rows, then an UPDATE
    that marks them taken without checking that they still are free): a fetch that overlaps another
    consumer's fetch of the same queue hands out some of the messages that consumer just got. A single
    consumer never sees a difference; two consumers that fetch at the same time run messages twice."""

    kind = "broken_racy_claim"
    aliases = ()
    _WINDOW = 0.05  # seconds between the "SELECT" and the "UPDATE"

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        out = super().fetch(max_count, timeout)
        if not out:
            return out
        with _racy_lock:
            _racy_claims.append((time.monotonic(), self._q, self, out))
        time.sleep(self._WINDOW / 5)  # the round trip between the two steps
        now = time.monotonic()
        with _racy_lock:
            _racy_claims[:] = [c for c in _racy_claims if now - c[0] < self._WINDOW]
            theirs = [d for _, q, owner, ds in _racy_claims if q is self._q and owner is not self for d in ds]
        if not theirs:
            return out
        # the overlapping claim's rows were still free when this fetch read them: it hands some of them out
        # again (its own surplus goes back, so nothing is lost: only duplicated)
        stolen = theirs[:max(1, len(out) // 2)]
        keep, give_back = out[:len(out) - len(stolen)], out[len(out) - len(stolen):]
        self._q.requeue([d.tag for d in give_back])
        return keep + [dataclasses.replace(d, tag=-next(_racy_tags)) for d in stolen]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


class LeaseBroker(Broker):
    """Not broken: the reference of the lease-based variants below. A small at-least-once broker in a
    SQLite file (stdlib ``sqlite3``, in the data folder that the contract suite points at a temporary one):
    ``fetch`` claims free rows for this consumer in one transaction; the rows of a consumer whose process
    is gone (pid check, same host) are released at the next fetch; ``close`` hands back what it holds.
    No in-flight count, like a plugin that cannot count what its consumers hold."""

    kind = "selftest_lease"
    aliases = ()
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=False,
        priority=False, ordering="fifo", queue_size="exact", in_flight_count=False, purge=True,
        cross_process=True)
    POLL = 0.02

    def __init__(self, queue_name: str, options=None) -> None:
        super().__init__(queue_name, options)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(user_data_dir() / "selftest_lease.db"), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS msgs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT, "
                         "body TEXT, holder TEXT, holder_pid INTEGER, redelivered INTEGER DEFAULT 0)")

    def _tx(self, fn):  # one IMMEDIATE transaction (a writer lock across processes)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        rows = [(self.queue_name, m.body) for m in messages]
        self._tx(lambda db: db.executemany("INSERT INTO msgs (queue, body) VALUES (?, ?)", rows))

    def _release_dead(self, db: sqlite3.Connection) -> None:
        held = db.execute("SELECT DISTINCT holder_pid FROM msgs WHERE queue=? AND holder IS NOT NULL",
                          (self.queue_name,)).fetchall()
        for (pid,) in held:
            if not _pid_alive(pid):
                db.execute("UPDATE msgs SET holder=NULL, holder_pid=NULL, redelivered=1 WHERE queue=? AND "
                           "holder_pid=?", (self.queue_name, pid))

    def _claim(self, max_count: int) -> list[Delivery]:
        def claim(db: sqlite3.Connection) -> list[Delivery]:
            self._release_dead(db)
            rows = db.execute("SELECT id, body, redelivered FROM msgs WHERE queue=? AND holder IS NULL ORDER BY id "
                              "LIMIT ?", (self.queue_name, max_count)).fetchall()
            db.executemany("UPDATE msgs SET holder=?, holder_pid=? WHERE id=?",
                           [(self.consumer_id, os.getpid(), r[0]) for r in rows])
            return [Delivery(body=r[1], tag=r[0], redelivered=bool(r[2])) for r in rows]
        return self._tx(claim)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            out = self._claim(max_count) if max_count > 0 else []
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            time.sleep(min(self.POLL, left))

    def _settle(self, deliveries: Sequence[Delivery], sql: str) -> None:
        ids = [(d.tag, self.consumer_id) for d in deliveries]
        if ids:
            self._tx(lambda db: db.executemany(sql, ids))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "DELETE FROM msgs WHERE id=? AND holder=?")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "UPDATE msgs SET holder=NULL, holder_pid=NULL, redelivered=1 WHERE id=? AND holder=?")

    def queue_size(self) -> QueueSize:
        with self._lock:
            (ready,) = self._db.execute("SELECT count(*) FROM msgs WHERE queue=? AND holder IS NULL",
                                        (self.queue_name,)).fetchone()
        return QueueSize(ready=ready, in_flight=None, delayed=0)

    def purge(self) -> int:
        return self._tx(lambda db: db.execute("DELETE FROM msgs WHERE queue=? AND holder IS NULL",
                                              (self.queue_name,)).rowcount)

    def close(self) -> None:
        try:
            self._tx(lambda db: db.execute("UPDATE msgs SET holder=NULL, holder_pid=NULL, redelivered=1 WHERE "
                                           "holder=?", (self.consumer_id,)))
            with self._lock:
                self._db.close()
        except sqlite3.ProgrammingError:  # closed already
            pass
        super().close()


class NoOpAckLeaseBroker(LeaseBroker):
    """A lease-based at-least-once broker whose ``ack`` does nothing, without an in-flight count that
    would show it: acked messages stay held by their consumer until it is gone, then come back."""

    kind = "broken_noop_ack_lease"
    aliases = ()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pass


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
    "RacyClaimBroker": ["test_delivery_mode.py::TestDeliveryMode::test_concurrent_consumers_get_each_message_once"],
    "NoOpAckLeaseBroker": [
        "test_redelivery.py::TestRedelivery::test_killed_consumers_unacked_messages_come_back_and_acked_ones_do_not"],
}

# correct brokers that pass every test of EXPECTED_FAILURES that applies to them (the self-test's controls)
CONTROLS: list[str] = ["funboost.brokers.memory:MemoryBroker", "funboost.testing.broken_brokers:LeaseBroker"]
