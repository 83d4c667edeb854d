"""One sqlite database file as seen from one process.

Why one shared connection per (process, file), guarded by a lock, rather than one connection per thread:
sqlite lets only one writer in at a time anyway, and when two connections of the *same* process collide,
sqlite's busy handler sleeps (1, 2, 5, 10 ... ms) instead of waking when the lock is free. A Python lock
hands the database to the next thread in microseconds. Across processes, sqlite's busy handler
(``busy_timeout``) does the waiting: while one process sleeps, the other runs many short transactions in a
row, which measured faster than taking strict turns on a ``flock`` (option ``file_lock``: fairer, but a
context switch per transaction).

Every write is a short ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so a
transaction never has to upgrade a read lock (the case where sqlite gives up without waiting).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

from funboost.process_local import ProcessLocal, ProcessLocalDict

try:  # POSIX only; on Windows sqlite's own busy handler does the waiting
    import fcntl
except ImportError:  # pragma: no cover - windows
    fcntl = None  # type: ignore[assignment]


SCHEMA_VERSION = 2  # 2: queue_counts (files of version 1 are migrated when first opened)

# state: 0 = ready, 1 = in flight (taken by ``consumer``), 2 = delayed until ``available_at``
# queue_counts: how many rows of each state a queue has, so that queue_size() costs O(1) instead of a scan
# of the backlog. The broker changes it with its own statements, in the transaction that changes the rows
# (one statement per batch, not a trigger per row); so it is exact across processes and after a crash.
SCHEMA = ("""
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY,
    queue        TEXT    NOT NULL,
    state        INTEGER NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    available_at REAL    NOT NULL,
    consumer     TEXT,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    task_id      TEXT,
    published_at REAL    NOT NULL,
    fetched_at   REAL,
    body         TEXT    NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS messages_by_state ON messages (queue, state, priority DESC, id)",
    "CREATE INDEX IF NOT EXISTS messages_delayed ON messages (queue, available_at) WHERE state = 2",
    """CREATE TABLE IF NOT EXISTS consumers (
    id         TEXT PRIMARY KEY,
    queue      TEXT    NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    started_at REAL    NOT NULL,
    last_seen  REAL    NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS queue_counts (
    queue     TEXT    PRIMARY KEY,
    ready     INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    delayed   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID""",
    # The one-message publish (f.push()): one autocommit INSERT into this view, whose trigger stores the row
    # and counts it in the same statement, hence the same transaction. Measured with callgrind, it saves
    # ~14,000 of the ~34,000 instructions that BEGIN + INSERT + count + COMMIT from Python add to a bare
    # INSERT. Not a trigger on ``messages``: that would run once per row of a batch (a per-row trigger cut
    # batch publish to a fifth); batches and every other write count with one statement of their own.
    "CREATE VIEW IF NOT EXISTS publish_one AS "
    "SELECT queue, state, priority, available_at, task_id, published_at, body FROM messages",
    """CREATE TRIGGER IF NOT EXISTS publish_one_insert INSTEAD OF INSERT ON publish_one BEGIN
    INSERT INTO messages (queue, state, priority, available_at, task_id, published_at, body)
        VALUES (NEW.queue, NEW.state, NEW.priority, NEW.available_at, NEW.task_id, NEW.published_at, NEW.body);
    INSERT INTO queue_counts (queue, ready, in_flight, delayed) VALUES (NEW.queue, NEW.state = 0, 0, NEW.state = 2)
        ON CONFLICT (queue) DO UPDATE SET ready = ready + excluded.ready, delayed = delayed + excluded.delayed;
END""",
)
# adds (or, with negative numbers, subtracts) to a queue's counts; parameters: queue, ready, in_flight, delayed
COUNT_DELTA = ("INSERT INTO queue_counts (queue, ready, in_flight, delayed) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (queue) DO UPDATE SET ready = ready + excluded.ready, "
               "in_flight = in_flight + excluded.in_flight, delayed = delayed + excluded.delayed")
# the counts taken from the rows themselves: the migration of a version-1 file, and SqliteBroker.recount()
_RECOUNT = ("INSERT OR REPLACE INTO queue_counts (queue, ready, in_flight, delayed) "
            "SELECT queue, sum(state = 0), sum(state = 1), sum(state = 2) FROM messages {where} GROUP BY queue")

# No AUTOINCREMENT (it costs ~20 % of a one-message publish): an id may be reused once its row is gone,
# so ack and requeue also match ``consumer``; a late ack from a consumer presumed dead therefore never
# touches a newer message that got the same id.


class Database:
    """The connection, locks and wake-up condition for one database file in this process."""

    def __init__(self, path: str, busy_timeout: float, synchronous: str, file_lock: bool) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.file_lock = file_lock and fcntl is not None
        self.lock = threading.RLock()  # guards the connection: one statement/transaction at a time
        # publishers in this process wake fetchers in this process at once (no cross-process signal)
        self.cond = threading.Condition(threading.Lock())
        self.seq = 0  # bumped by every publish/requeue in this process
        self.waiters = 0  # fetchers sleeping on ``cond``
        self.users = 0
        self._conn: Optional[sqlite3.Connection] = None
        self._lock_fd: Optional[int] = None
        self._txn = _WriteTransaction(self)

    # ---------------------------------------------------------------- connection
    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is not None:
            return conn
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE ... COMMIT
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._retry_locked(lambda: self._set_wal(conn))
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA temp_store = MEMORY")
            if self.file_lock:
                self._lock_fd = os.open(self.path + "-lock", os.O_RDWR | os.O_CREAT, 0o600)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._with_file_lock(lambda: self._create_schema(conn))
        except BaseException:
            conn.close()
            self._close_lock_fd()
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"database is locked (journal_mode is {mode})")

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        # the version is read again under the write lock: of several processes opening an old file at
        # once, exactly one migrates it, and no write of another process falls between its count and commit
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                for stmt in SCHEMA:
                    conn.execute(stmt)
                if version < 2:
                    # a version-1 file (or a new one): counts from a scan, once
                    conn.execute("DELETE FROM queue_counts")
                    conn.execute(_RECOUNT.format(where=""))
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry_locked(self, fn) -> None:
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _with_file_lock(self, fn):
        if self._lock_fd is None:
            return fn()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        try:
            return fn()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _close_lock_fd(self) -> None:
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
                    self._close_lock_fd()

    # ---------------------------------------------------------------- transactions
    def write(self) -> "_WriteTransaction":
        """A short ``BEGIN IMMEDIATE`` transaction (``with db.write() as conn:``); committed on success,
        rolled back on error."""
        return self._txn

    def write_one(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement as its own transaction; returns the row count. An autocommit write statement
        takes the write lock when it starts (like BEGIN IMMEDIATE, busy handler included), so this is as
        safe as :meth:`write` and saves the BEGIN and COMMIT round trips on the hottest path (a statement
        and the trigger statements it fires are one transaction: see ``publish_one``)."""
        with self.lock:
            conn = self._connect()
            fd = self._lock_fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return conn.execute(sql, params).rowcount
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for autocommit reads (each statement sees one consistent snapshot)."""
        with self.lock:
            yield self._connect()

    def notify(self) -> None:
        # seq first, then waiters: a fetcher registers as a waiter before it compares seq (see fetch)
        self.seq += 1
        if self.waiters:
            with self.cond:
                self.cond.notify_all()


def recount(conn: sqlite3.Connection, queue: str) -> None:
    """Set ``queue``'s counts from its rows (inside the caller's write transaction)."""
    conn.execute("DELETE FROM queue_counts WHERE queue = ?", (queue,))
    conn.execute(_RECOUNT.format(where="WHERE queue = ?"), (queue,))


class _WriteTransaction:
    """Context manager of :meth:`Database.write` (a class, not a generator: it is on every message's path).
    It holds no per-use state, so each database reuses one instance; ``Database.lock`` serializes uses."""

    __slots__ = ("db", "fd")

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fd: Optional[int] = None

    def __enter__(self) -> sqlite3.Connection:
        db = self.db
        db.lock.acquire()
        try:
            conn = db._connect()
            self.fd = fd = db._lock_fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits in the kernel, GIL released
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                raise
        except BaseException:
            db.lock.release()
            raise
        return conn

    def __exit__(self, exc_type, exc, tb) -> None:
        db = self.db
        conn = db._conn
        fd = self.fd
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            db.lock.release()


# The process-wide databases. In a forked child the parent's connections and locks are unusable (a lock may
# even be held by a parent thread that does not exist in the child): the child opens its own. The parent's
# are kept referenced and never closed there: closing a connection inherited through fork is itself unsafe
# (it would drop the parent's POSIX locks on the file).
_databases: ProcessLocalDict[str, Database] = ProcessLocalDict()
_users_lock: ProcessLocal[threading.Lock] = ProcessLocal(threading.Lock)


def get_database(path: str, busy_timeout: float, synchronous: str, file_lock: bool) -> Database:
    """The process-wide :class:`Database` of ``path`` (a connection must never cross a fork)."""
    with _users_lock.get():
        db = _databases.get_or_create(path, lambda: Database(path, busy_timeout, synchronous, file_lock))
        db.users += 1
        return db


def release_database(db: Database) -> None:
    with _users_lock.get():
        db.users -= 1
        if db.users <= 0:
            db.users = 0
            db.close()  # reopened lazily if a broker is used after close()
