"""SQLITE_QUEUE: a durable, multi-process, at-least-once queue in a sqlite file (stdlib only).

Life of a message (one row of ``messages``):

``publish``  INSERT as ready (state 0), or delayed (state 2) when its eta is in the future
``fetch``    in one IMMEDIATE transaction: promote due delayed rows, take up to N ready rows ordered by
             priority desc then id, mark them in flight (state 1) with this broker's ``consumer_id``
``ack``      DELETE the rows (one transaction per batch)
``requeue``  back to ready, at the tail of its priority
``reject``   the base behaviour: publish to ``<queue>_dlx`` (a queue of the same kind), then ack

Each of these also adds to or subtracts from the queue's row of ``queue_counts`` (one statement per batch, in
the same transaction), which ``queue_size`` reads instead of counting the backlog.

Liveness-based reclaim (core's :class:`funboost.engine.liveness.ConsumerLease`): a consumer keeps a row in
``consumers`` whose ``last_seen`` the process's liveness ticker refreshes every ``heartbeat_interval`` seconds. Every ``reclaim_interval`` seconds, any fetching consumer
puts back to ready the in-flight rows of consumers whose heartbeat is older than ``heartbeat_timeout``, or,
on the same host, whose process no longer exists. A long task of a live consumer is never run twice.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from funboost.engine.liveness import HOST_KEY, ConsumerLease, LeaseInfo, pid_gone
from funboost.exceptions import FunboostError
from funboost.plugins.broker import (Broker, BrokerOptions, Capabilities, Delivery, OutgoingMessage,
                                     QueueSize)
from funboost.process_local import fork_generation

from funboost_sqlite.db import COUNT_DELTA, Database, get_database, recount, release_database
from funboost_sqlite.paths import resolve_db_file

logger = logging.getLogger("funboost.sqlite")

READY, IN_FLIGHT, DELAYED = 0, 1, 2
_INSERT = ("INSERT INTO messages (queue, state, priority, available_at, task_id, published_at, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
# the one-message publish: a view whose INSTEAD OF trigger inserts the row and counts it (see db.SCHEMA)
_INSERT_ONE = ("INSERT INTO publish_one (queue, state, priority, available_at, task_id, published_at, body) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")
_CHUNK = 500  # ids per "IN (...)" list: well under every sqlite build's variable limit


# where a pid means the same process, and whether it still runs: core's liveness helpers, importable here
__all__ = ["SqliteBroker", "SqliteOptions", "QueueStorageFull", "HOST_KEY", "pid_gone"]


class QueueStorageFull(FunboostError, sqlite3.OperationalError):
    """A publish refused because the queue's database file is on a full disk (or at the file system's size
    limit); nothing of that publish was stored. Still an ``sqlite3.OperationalError`` for older handlers."""


class SqliteOptions(BrokerOptions):
    """``broker_exclusive_config`` of the sqlite broker."""

    db_path: Optional[str] = Field(
        None, description="one database file shared by every queue (default: env FUNBOOST_SQLITE_PATH)")
    db_dir: Optional[str] = Field(
        None, description="directory with one database file per queue (default: env FUNBOOST_SQLITE_DIR, "
                          "else the per-user data directory)")
    heartbeat_interval: float = Field(2.0, gt=0, description="seconds between consumer heartbeats")
    heartbeat_timeout: float = Field(
        10.0, gt=0, description="a consumer silent this long is dead: its in-flight messages go back")
    reclaim_interval: float = Field(3.0, gt=0, description="how often a fetching consumer looks for dead ones")
    check_pid: bool = Field(
        True, description="on the same host, a consumer whose process is gone is dead at once")
    busy_timeout: float = Field(30.0, gt=0, description="seconds to wait for the write lock of another process")
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "NORMAL", description="NORMAL (WAL): survives process crashes; FULL: also power loss, slower")
    file_lock: bool = Field(
        False, description="POSIX: writers of several processes take turns on a flock: fairer, but each turn "
                           "costs a context switch (measured 1.1-3x slower under contention)")
    poll_min: float = Field(0.005, gt=0, description="first sleep of an idle fetch (other processes' publishes)")
    poll_max: float = Field(0.1, gt=0, description="longest sleep of an idle fetch: worst-case cross-process latency")

    @model_validator(mode="after")
    def _check(self) -> "SqliteOptions":
        if self.heartbeat_timeout <= self.heartbeat_interval * 2:
            raise ValueError("heartbeat_timeout must be more than twice heartbeat_interval")
        if self.poll_max < self.poll_min:
            raise ValueError("poll_max must be >= poll_min")
        if self.db_path and self.db_dir:
            raise ValueError("set db_path (one shared file) or db_dir (a file per queue), not both")
        return self


class SqliteBroker(Broker):
    kind = "sqlite"
    aliases = ("sqlite_queue", "sqlite3", "persistqueue")
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=True, ordering="priority", queue_size="exact", in_flight_count=True, purge=True,
        broadcast=False, request_response=False, cross_process=True, max_priority=2**31)
    options_model = SqliteOptions

    def __init__(self, queue_name: str, options: Optional[SqliteOptions] = None) -> None:
        super().__init__(queue_name, options)
        o: SqliteOptions = self.options  # type: ignore[assignment]
        self.db_file = resolve_db_file(queue_name, o.db_path, o.db_dir)
        self._gen = fork_generation()
        self._db: Database = self._open_db()
        self._poll = o.poll_min
        self._registered = False  # our row exists in ``consumers``
        # identity after fork, renewal on the process's ticker, reclaim schedule (the first fetch reclaims
        # at once: it recovers a crashed predecessor) and the verdict on other holders
        self._lease = ConsumerLease(queue_name, self.consumer_id, heartbeat_interval=o.heartbeat_interval,
                                    heartbeat_timeout=o.heartbeat_timeout, renew=self._renew_lease,
                                    reclaim_interval=o.reclaim_interval, check_pid=o.check_pid)
        self._renewing = False  # the lease is on the ticker
        self._state_lock = threading.Lock()
        self._closed = False

    def _open_db(self) -> Database:
        o: SqliteOptions = self.options  # type: ignore[assignment]
        return get_database(self.db_file, o.busy_timeout, o.synchronous, o.file_lock)

    @property
    def db(self) -> Database:
        if self._gen != fork_generation() or self._closed:
            self._reopen()
        return self._db

    def _reopen(self) -> None:
        """After a fork (a new connection and a new identity as a consumer), or when a closed broker is
        used again (it comes back to life: connection, and a heartbeat on its next fetch)."""
        if self._gen != fork_generation():
            self._state_lock = threading.Lock()  # a parent thread may have held it at fork time
        with self._state_lock:
            if self._gen != fork_generation():
                self._gen = fork_generation()
                self._lease.check_fork()  # a new consumer id: the parent's in-flight work is the parent's
                self.consumer_id = self._lease.consumer_id
            elif not self._closed:
                return
            self._db = self._open_db()
            self._closed = False
            self._registered = False
            self._lease.restart_reclaim_schedule()
            self._renewing = False

    @classmethod
    def check_available(cls, options: SqliteOptions) -> Optional[str]:
        path = resolve_db_file("funboost_check_available", options.db_path, options.db_dir)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.access(os.path.dirname(path), os.W_OK):
                return f"directory {os.path.dirname(path)!r} is not writable"
        except OSError as exc:
            return f"cannot create {os.path.dirname(path)!r}: {exc}"
        return None

    # ---------------------------------------------------------------- publish
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = time.time()
        q = self.queue_name
        rows = []
        delayed = 0
        for m in messages:
            if m.eta is not None and m.eta > now:
                rows.append((q, DELAYED, m.priority or 0, m.eta, m.task_id or None, now, m.body))
                delayed += 1
            else:
                rows.append((q, READY, m.priority or 0, now, m.task_id or None, now, m.body))
        db = self.db
        try:
            if len(rows) == 1:  # the common f.push() case: one autocommit statement, no BEGIN/COMMIT round trips
                db.write_one(_INSERT_ONE, rows[0])
            else:
                with db.write() as c:
                    c.executemany(_INSERT, rows)
                    c.execute(COUNT_DELTA, (q, len(rows) - delayed, 0, delayed))
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            # one transaction: none of these messages is in the file, the ones stored before are intact
            raise QueueStorageFull(f"sqlite queue {q!r}: no space for {len(rows)} message(s) in {self.db_file} "
                                   f"({exc}); nothing of this publish was stored") from exc
        db.notify()

    # ---------------------------------------------------------------- fetch
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        o: SqliteOptions = self.options  # type: ignore[assignment]
        db = self.db
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            seen = db.seq
            now = time.time()
            with db.read() as c:
                has_ready, next_due = c.execute(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ? AND state = 0), "
                    "(SELECT min(available_at) FROM messages WHERE queue = ? AND state = 2)",
                    (self.queue_name, self.queue_name)).fetchone()
            due = next_due is not None and next_due <= now
            if has_ready or due or self._lease.reclaim_due(now, consume=False):
                out = self._take(max_count, now, due)
                if out:
                    self._poll = o.poll_min
                    return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = min(self._poll, remaining)
            if next_due is not None and not due:
                wait = min(wait, max(0.001, next_due - time.time()))
            with db.cond:
                db.waiters += 1
                try:
                    if db.seq == seen:
                        db.cond.wait(wait)
                        self._poll = min(self._poll * 2, o.poll_max)
                finally:
                    db.waiters -= 1

    def _take(self, max_count: int, now: float, promote: bool) -> list[Delivery]:
        q = self.queue_name
        cid = self.consumer_id
        with self.db.write() as c:
            back = promoted = taken = 0  # reclaimed: in flight -> ready; promoted: delayed -> ready
            if self._lease.reclaim_due(now):
                back = self._reclaim(c, now)
            if promote:
                promoted = c.execute("UPDATE messages SET state = 0 WHERE queue = ? AND state = 2 "
                                     "AND available_at <= ?", (q, now)).rowcount
            rows = c.execute("SELECT id, body, deliveries FROM messages WHERE queue = ? AND state = 0 "
                             "ORDER BY priority DESC, id LIMIT ?", (q, max_count)).fetchall()
            if rows:
                if not self._registered or self._lease.renew_due(now):
                    # our heartbeat row exists before anything is marked with our id
                    self._beat(c, now)
                ids = [r[0] for r in rows]
                for i in range(0, len(ids), _CHUNK):
                    part = ids[i:i + _CHUNK]
                    taken += c.execute(f"UPDATE messages SET state = 1, consumer = ?, deliveries = deliveries + 1, "
                                       f"fetched_at = ? WHERE id IN ({','.join('?' * len(part))})",
                                       (cid, now, *part)).rowcount
            if back or promoted or taken:
                c.execute(COUNT_DELTA, (q, back + promoted - taken, taken - back, -promoted))
        if not rows:
            return []
        if not self._renewing:
            self._start_heartbeat()
        return [Delivery(body=body, tag=mid, redelivered=n > 0) for mid, body, n in rows]

    # ---------------------------------------------------------------- liveness
    def _beat(self, c, now: float) -> None:
        lease = self._lease.info(now)
        c.execute("INSERT INTO consumers (id, queue, host, pid, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                  (lease.consumer_id, self.queue_name, lease.host, lease.pid, now, now))
        self._registered = True
        self._lease.mark_renewed(now)

    def _renew_lease(self, lease: LeaseInfo) -> None:
        """Called by the liveness ticker every ``heartbeat_interval`` seconds."""
        with self._state_lock:  # never after close() deleted our row (it would come back as a zombie lease)
            if self._closed or not self._renewing:
                return
            with self._db.write() as c:  # not .db: that would reopen a broker closed meanwhile
                self._beat(c, lease.last_seen)

    def _reclaim(self, c, now: float, purging: bool = False) -> int:
        """Put back the in-flight rows of dead consumers (inside the caller's write transaction).
        ``purging``: the caller deletes them next (``purge``), and the log says so."""
        o: SqliteOptions = self.options  # type: ignore[assignment]
        q = self.queue_name
        holders = [r[0] for r in c.execute(
            "SELECT DISTINCT consumer FROM messages WHERE queue = ? AND state = 1", (q,))]
        if not holders:
            return 0
        known = {cid: LeaseInfo(cid, host, pid, seen) for cid, host, pid, seen in c.execute(
            f"SELECT id, host, pid, last_seen FROM consumers WHERE id IN ({','.join('?' * len(holders))})",
            holders)}
        dead = self._lease.dead_holders(holders, known, now)  # this very instance is alive by definition
        n = 0
        for holder in dead:
            n += c.execute("UPDATE messages SET state = 0, consumer = NULL WHERE queue = ? AND state = 1 "
                           "AND consumer = ?", (q, holder)).rowcount
            c.execute("DELETE FROM consumers WHERE id = ?", (holder,))
        # housekeeping: rows of consumers long gone that hold nothing
        c.execute("DELETE FROM consumers WHERE queue = ? AND last_seen < ?", (q, now - 10 * o.heartbeat_timeout))
        if n and purging:
            logger.info("queue %r: clear() drops %d in-flight message(s) of dead consumer(s) %s", q, n,
                        ", ".join(dead))
        elif n:
            logger.warning("queue %r: %d in-flight message(s) of dead consumer(s) %s put back to ready",
                           q, n, ", ".join(dead))
            self.db.notify()
        return n

    def _start_heartbeat(self) -> None:
        with self._state_lock:
            if self._renewing or self._closed:
                return
            self._renewing = True
        self._lease.start(renew_now=False)  # the fetch transaction has just written the lease

    # ---------------------------------------------------------------- ack / requeue
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.tag for d in deliveries]
        db = self.db  # first: after a fork this also renews consumer_id
        cid = self.consumer_id
        # "AND consumer": if this consumer was presumed dead and its message was given to another one (or
        # the id reused), the late ack leaves the row alone (at worst a duplicate run, never a lost message)
        with db.write() as c:
            n = 0
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                n += c.execute(f"DELETE FROM messages WHERE consumer = ? AND state = 1 "
                               f"AND id IN ({','.join('?' * len(part))})", (cid, *part)).rowcount
            if n:
                c.execute(COUNT_DELTA, (self.queue_name, 0, -n, 0))

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        now = time.time()
        db = self.db
        cid = self.consumer_id
        params = [(now, d.tag, cid) for d in deliveries]
        with db.write() as c:
            # a new id puts it at the tail of its priority, so a message that is always requeued
            # cannot starve the others; the delivery count is kept (redelivered=True next time)
            back = c.executemany(
                "INSERT INTO messages (queue, state, priority, available_at, deliveries, task_id, published_at, "
                "body) SELECT queue, 0, priority, ?, deliveries, task_id, published_at, body FROM messages "
                "WHERE id = ? AND state = 1 AND consumer = ?", params).rowcount
            gone = c.executemany("DELETE FROM messages WHERE id = ? AND state = 1 AND consumer = ?",
                                 [(d.tag, cid) for d in deliveries]).rowcount
            if back or gone:
                c.execute(COUNT_DELTA, (self.queue_name, back, -gone, 0))
        db.notify()

    # ---------------------------------------------------------------- sizes
    def queue_size(self) -> QueueSize:
        # O(1) from the counts, plus a count of the delayed rows already due but not yet promoted by a fetch
        # (normally few: it walks only those rows of the partial index ``messages_delayed``); one statement,
        # so one consistent snapshot
        with self.db.read() as c:
            ready, in_flight, delayed, due = c.execute(
                "SELECT c.ready, c.in_flight, c.delayed, (SELECT count(*) FROM messages WHERE queue = ?1 "
                "AND state = 2 AND available_at <= ?2) FROM (SELECT 1) LEFT JOIN queue_counts c ON c.queue = ?1",
                (self.queue_name, time.time())).fetchone()
        if ready is None:  # no row yet: nothing was ever published to this queue
            return QueueSize(ready=due, in_flight=0, delayed=0)
        return QueueSize(ready=ready + due, in_flight=in_flight, delayed=delayed - due)

    def purge(self) -> int:
        """Drop the queue's ready and delayed messages, and the in-flight ones of consumers known to be dead
        (they would come back at the next reclaim pass and run after the clear). A living consumer's
        in-flight messages stay: they are running."""
        with self.db.write() as c:
            back = self._reclaim(c, time.time(), purging=True)
            n = c.execute("DELETE FROM messages WHERE queue = ? AND state IN (0, 2)", (self.queue_name,)).rowcount
            c.execute("UPDATE queue_counts SET ready = 0, delayed = 0, in_flight = in_flight - ? WHERE queue = ?",
                      (back, self.queue_name))
        return n

    def recount(self) -> QueueSize:
        """Rebuild this queue's counts from its rows (a scan of the backlog) and return the new size.
        Never needed in normal operation; a repair if a process of a version before the counts (funboost-sqlite
        with schema version 1) wrote to the file after it was migrated."""
        with self.db.write() as c:
            recount(c, self.queue_name)
        return self.queue_size()

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._renewing = False  # under the lock: no renewal writes after this point
        self._lease.stop()
        same_process = self._gen == fork_generation()
        try:
            if self._registered and same_process:
                with self._db.write() as c:
                    # with work still in flight the row stays: it expires (or the pid vanishes) and the
                    # rows come back then, never while a task of this process might still be running
                    held = c.execute("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ? AND state = 1 "
                                     "AND consumer = ?)", (self.queue_name, self.consumer_id)).fetchone()[0]
                    if not held:
                        c.execute("DELETE FROM consumers WHERE id = ?", (self.consumer_id,))
                self._registered = False
        except Exception as exc:  # closing must not raise because the disk went away
            logger.warning("queue %r: could not unregister consumer %s: %s", self.queue_name,
                           self.consumer_id, exc)
        finally:
            if same_process:
                release_database(self._db)
            super().close()
