"""SQLITE_QUEUE: a durable, multi-process, at-least-once queue in a sqlite file (stdlib only).

Life of a message (one row of ``messages``):

``publish``  INSERT as ready (state 0), or delayed (state 2) when its eta is in the future
``fetch``    in one IMMEDIATE transaction: promote due delayed rows, take up to N ready rows ordered by
             priority desc then id, mark them in flight (state 1) with this broker's ``consumer_id``
``ack``      DELETE the rows (one transaction per batch)
``requeue``  back to ready, at the tail of its priority
``reject``   the base behaviour: publish to ``<queue>_dlx`` (a queue of the same kind), then ack

Liveness-based reclaim: a consumer keeps a row in ``consumers`` whose ``last_seen`` a daemon thread
refreshes every ``heartbeat_interval`` seconds. Every ``reclaim_interval`` seconds, any fetching consumer
puts back to ready the in-flight rows of consumers whose heartbeat is older than ``heartbeat_timeout``, or,
on the same host, whose process no longer exists. A long task of a live consumer is never run twice.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from funboost.plugins.broker import (Broker, BrokerOptions, Capabilities, Delivery, OutgoingMessage,
                                     QueueSize, new_consumer_id)

from funboost_sqlite.db import Database, get_database, release_database
from funboost_sqlite.paths import resolve_db_file

logger = logging.getLogger("funboost.sqlite")

READY, IN_FLIGHT, DELAYED = 0, 1, 2
_INSERT = ("INSERT INTO messages (queue, state, priority, available_at, task_id, published_at, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_CHUNK = 500  # ids per "IN (...)" list: well under every sqlite build's variable limit


def _host_key() -> str:
    """Names this host *and* pid namespace, so a pid is only checked where it means the same process."""
    key = socket.gethostname()
    try:
        key += "/" + os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return key


HOST_KEY = _host_key()


def _pid_gone(pid: int) -> bool:
    """True if no process ``pid`` runs here (a zombie counts as gone). POSIX only: on Windows
    ``os.kill`` would terminate the process, so there we rely on heartbeats alone."""
    if os.name != "posix" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, owned by someone else
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


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
        self._pid = os.getpid()
        self._db: Database = self._open_db()
        self._poll = o.poll_min
        self._registered = False  # our row exists in ``consumers``
        self._last_beat = 0.0
        self._next_reclaim = 0.0  # the first fetch reclaims at once (recovers a crashed predecessor)
        self._hb_stop: Optional[threading.Event] = None
        self._hb_thread: Optional[threading.Thread] = None
        self._state_lock = threading.Lock()
        self._closed = False

    def _open_db(self) -> Database:
        o: SqliteOptions = self.options  # type: ignore[assignment]
        return get_database(self.db_file, o.busy_timeout, o.synchronous, o.file_lock)

    @property
    def db(self) -> Database:
        if self._pid != os.getpid() or self._closed:
            self._reopen()
        return self._db

    def _reopen(self) -> None:
        """After a fork (a new connection and a new identity as a consumer), or when a closed broker is
        used again (it comes back to life: connection, and a heartbeat on its next fetch)."""
        with self._state_lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self.consumer_id = new_consumer_id(self.queue_name)
            elif not self._closed:
                return
            self._db = self._open_db()
            self._closed = False
            self._registered = False
            self._next_reclaim = 0.0
            self._hb_stop = self._hb_thread = None

    @classmethod
    def check_available(cls, options: SqliteOptions) -> Optional[str]:  # type: ignore[override]
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
        for m in messages:
            if m.eta is not None and m.eta > now:
                rows.append((q, DELAYED, m.priority or 0, m.eta, m.task_id or None, now, m.body))
            else:
                rows.append((q, READY, m.priority or 0, now, m.task_id or None, now, m.body))
        db = self.db
        if len(rows) == 1:  # the common f.push() case: one autocommit statement, no BEGIN/COMMIT round trips
            db.write_one(_INSERT, rows[0])
        else:
            with db.write() as c:
                c.executemany(_INSERT, rows)
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
            if has_ready or due or now >= self._next_reclaim:
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
        o: SqliteOptions = self.options  # type: ignore[assignment]
        q = self.queue_name
        cid = self.consumer_id
        with self.db.write() as c:
            if now >= self._next_reclaim:
                self._reclaim(c, now)
                self._next_reclaim = now + o.reclaim_interval
            if promote:
                c.execute("UPDATE messages SET state = 0 WHERE queue = ? AND state = 2 AND available_at <= ?",
                          (q, now))
            rows = c.execute("SELECT id, body, deliveries FROM messages WHERE queue = ? AND state = 0 "
                             "ORDER BY priority DESC, id LIMIT ?", (q, max_count)).fetchall()
            if not rows:
                return []
            if not self._registered or now - self._last_beat >= o.heartbeat_interval / 2:
                # our heartbeat row exists before anything is marked with our id
                self._beat(c, now)
            ids = [r[0] for r in rows]
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                c.execute(f"UPDATE messages SET state = 1, consumer = ?, deliveries = deliveries + 1, "
                          f"fetched_at = ? WHERE id IN ({','.join('?' * len(part))})", (cid, now, *part))
        if self._hb_thread is None:
            self._start_heartbeat()
        return [Delivery(body=body, tag=mid, redelivered=n > 0) for mid, body, n in rows]

    # ---------------------------------------------------------------- liveness
    def _beat(self, c, now: float) -> None:
        c.execute("INSERT INTO consumers (id, queue, host, pid, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                  (self.consumer_id, self.queue_name, HOST_KEY, os.getpid(), now, now))
        self._registered = True
        self._last_beat = now

    def _reclaim(self, c, now: float) -> int:
        """Put back the in-flight rows of dead consumers (inside the caller's write transaction)."""
        o: SqliteOptions = self.options  # type: ignore[assignment]
        q = self.queue_name
        holders = [r[0] for r in c.execute(
            "SELECT DISTINCT consumer FROM messages WHERE queue = ? AND state = 1", (q,))]
        if not holders:
            return 0
        known = {cid: (host, pid, seen) for cid, host, pid, seen in c.execute(
            f"SELECT id, host, pid, last_seen FROM consumers WHERE id IN ({','.join('?' * len(holders))})",
            holders)}
        dead = []
        for holder in holders:
            info = known.get(holder)
            if holder == self.consumer_id and os.getpid() == self._pid:
                continue  # this very instance is alive by definition
            if info is None or info[2] < now - o.heartbeat_timeout or (
                    o.check_pid and info[0] == HOST_KEY and _pid_gone(info[1])):
                dead.append(holder)
        n = 0
        for holder in dead:
            n += c.execute("UPDATE messages SET state = 0, consumer = NULL WHERE queue = ? AND state = 1 "
                           "AND consumer = ?", (q, holder)).rowcount
            c.execute("DELETE FROM consumers WHERE id = ?", (holder,))
        # housekeeping: rows of consumers long gone that hold nothing
        c.execute("DELETE FROM consumers WHERE queue = ? AND last_seen < ?", (q, now - 10 * o.heartbeat_timeout))
        if n:
            logger.warning("queue %r: %d in-flight message(s) of dead consumer(s) %s put back to ready",
                           q, n, ", ".join(dead))
            self.db.notify()
        return n

    def _start_heartbeat(self) -> None:
        with self._state_lock:
            if self._hb_thread is not None or self._closed:
                return
            stop = threading.Event()
            t = threading.Thread(target=_heartbeat_loop, args=(weakref.ref(self), stop),
                                 name=f"funboost-sqlite-heartbeat-{self.queue_name}", daemon=True)
            self._hb_stop, self._hb_thread = stop, t
            t.start()

    # ---------------------------------------------------------------- ack / requeue
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.tag for d in deliveries]
        db = self.db  # first: after a fork this also renews consumer_id
        cid = self.consumer_id
        # "AND consumer": if this consumer was presumed dead and its message was given to another one (or
        # the id reused), the late ack leaves the row alone (at worst a duplicate run, never a lost message)
        if len(ids) <= _CHUNK:  # the usual batch: one statement, one implicit transaction
            db.write_one(f"DELETE FROM messages WHERE consumer = ? AND id IN ({','.join('?' * len(ids))})",
                         (cid, *ids))
            return
        with db.write() as c:
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                c.execute(f"DELETE FROM messages WHERE consumer = ? AND id IN ({','.join('?' * len(part))})",
                          (cid, *part))

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
            c.executemany("INSERT INTO messages (queue, state, priority, available_at, deliveries, task_id, "
                          "published_at, body) SELECT queue, 0, priority, ?, deliveries, task_id, published_at, "
                          "body FROM messages WHERE id = ? AND state = 1 AND consumer = ?", params)
            c.executemany("DELETE FROM messages WHERE id = ? AND state = 1 AND consumer = ?",
                          [(d.tag, cid) for d in deliveries])
        db.notify()

    # ---------------------------------------------------------------- sizes
    def queue_size(self) -> QueueSize:
        q = self.queue_name
        now = time.time()
        with self.db.read() as c:
            ready, in_flight, due, delayed = c.execute(
                "SELECT (SELECT count(*) FROM messages WHERE queue = ? AND state = 0), "
                "(SELECT count(*) FROM messages WHERE queue = ? AND state = 1), "
                "(SELECT count(*) FROM messages WHERE queue = ? AND state = 2 AND available_at <= ?), "
                "(SELECT count(*) FROM messages WHERE queue = ? AND state = 2 AND available_at > ?)",
                (q, q, q, now, q, now)).fetchone()
        return QueueSize(ready=ready + due, in_flight=in_flight, delayed=delayed)

    def purge(self) -> int:
        return self.db.write_one("DELETE FROM messages WHERE queue = ? AND state IN (0, 2)", (self.queue_name,))

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            stop, thread = self._hb_stop, self._hb_thread
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        try:
            if self._registered and self._pid == os.getpid():
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
            if self._pid == os.getpid():
                release_database(self._db)
            super().close()


def _heartbeat_loop(ref: "weakref.ReferenceType[SqliteBroker]", stop: threading.Event) -> None:
    while True:
        broker = ref()
        if broker is None:
            return
        interval = broker.options.heartbeat_interval  # type: ignore[attr-defined]
        del broker  # do not keep the broker alive while sleeping
        if stop.wait(interval):
            return
        broker = ref()
        if broker is None or broker._closed or broker._hb_stop is not stop:
            return
        try:
            with broker._db.write() as c:  # not .db: that would reopen a broker closed meanwhile
                broker._beat(c, time.time())
        except Exception as exc:  # a missed beat is survivable; the timeout allows several
            logger.warning("queue %r: heartbeat failed: %s", broker.queue_name, exc)
        del broker
