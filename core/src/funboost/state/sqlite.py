"""SQLite state backend (the default): shared by every process on one host through one WAL database.

Location: ``FUNBOOST_STATE_SQLITE_PATH``, else ``<user data dir>/state.sqlite3``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any, Optional

from funboost.paths import user_data_dir
from funboost.engine.status import expand_record, record_success, record_task_id, record_time_start
from funboost.state.base import StateBackend, dumps_state, dumps_state_bytes, loads_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (task_id TEXT PRIMARY KEY, data TEXT NOT NULL, expire_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS filters (queue TEXT, key TEXT, expire_at REAL, PRIMARY KEY (queue, key));
CREATE TABLE IF NOT EXISTS flags (queue TEXT, name TEXT, value TEXT, PRIMARY KEY (queue, name));
CREATE TABLE IF NOT EXISTS consumers (consumer_id TEXT PRIMARY KEY, queue TEXT, info TEXT, expire_at REAL);
CREATE TABLE IF NOT EXISTS kills (queue TEXT, task_id TEXT, expire_at REAL, PRIMARY KEY (queue, task_id));
CREATE TABLE IF NOT EXISTS status_batches (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, t_min REAL, t_max REAL,
    expire_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS status_batches_time ON status_batches (tbl, t_max);
CREATE TABLE IF NOT EXISTS status_ids (tbl TEXT, task_id TEXT, batch_id INTEGER NOT NULL,
    PRIMARY KEY (tbl, task_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expire_at REAL NOT NULL);
"""


class SqliteStateBackend(StateBackend):
    name = "sqlite"

    def __init__(self, url: Optional[str] = None) -> None:
        super().__init__(url)
        path = url or os.environ.get("FUNBOOST_STATE_SQLITE_PATH") or str(user_data_dir() / "state.sqlite3")
        if path.startswith("sqlite:///"):
            path = path[len("sqlite:///"):]
        self.path = path
        self._local = threading.local()
        self._last_gc = 0.0
        with self._conn() as c:
            c.executescript(_SCHEMA)
            try:  # JSON1 is built into SQLite >= 3.38 and into most older builds
                c.execute("SELECT json_extract('{\"a\": 1}', '$.a')")
                self._json1 = True
            except sqlite3.OperationalError:
                self._json1 = False

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn, self._local.pid = c, os.getpid()
        return c

    def _exec(self, sql: str, args: tuple = ()) -> list:
        return self._conn().execute(sql, args).fetchall()

    def _gc(self) -> None:
        now = time.time()
        if now - self._last_gc < 60:
            return
        self._last_gc = now
        c = self._conn()
        for t in ("results", "filters", "consumers", "kills", "status_batches", "locks"):
            c.execute(f"DELETE FROM {t} WHERE expire_at IS NOT NULL AND expire_at < ?", (now - 5,))
        # index rows of deleted batches (batch ids only grow; rows left by a shorter-lived table's batches
        # are skipped by queries, which join on live batches, and go once the older batches have gone)
        c.execute("DELETE FROM status_ids WHERE batch_id < (SELECT coalesce(min(id), 0) FROM status_batches)")

    # ---- results
    def set_result(self, task_id, status, ttl):
        self._exec("INSERT OR REPLACE INTO results VALUES (?,?,?)",
                   (task_id, dumps_state(status), time.time() + ttl))
        self._gc()

    def get_result(self, task_id):
        rows = self._exec("SELECT data FROM results WHERE task_id=? AND expire_at>=?", (task_id, time.time()))
        return loads_state(rows[0][0]) if rows else None

    # ---- filters
    def filter_add(self, queue, key, ttl):
        self._exec("INSERT OR REPLACE INTO filters VALUES (?,?,?)",
                   (queue, key, (time.time() + ttl) if ttl else None))

    def filter_contains(self, queue, key):
        rows = self._exec("SELECT 1 FROM filters WHERE queue=? AND key=? AND (expire_at IS NULL OR expire_at>=?)",
                          (queue, key, time.time()))
        return bool(rows)

    def filter_clear(self, queue):
        self._exec("DELETE FROM filters WHERE queue=?", (queue,))

    # ---- flags
    def set_flag(self, queue, name, value):
        self._exec("INSERT OR REPLACE INTO flags VALUES (?,?,?)", (queue, name, json.dumps(value)))

    def get_flags(self, queue):
        return {n: loads_state(v) for n, v in self._exec("SELECT name, value FROM flags WHERE queue=?", (queue,))}

    # ---- heartbeats
    def heartbeat(self, consumer_id, queue, info, ttl):
        data = {**info, "consumer_id": consumer_id, "queue": queue, "last_seen": time.time()}
        self._exec("INSERT OR REPLACE INTO consumers VALUES (?,?,?,?)",
                   (consumer_id, queue, dumps_state(data), time.time() + ttl))
        self._gc()

    def live_consumers(self, queue=None):
        if queue is None:
            rows = self._exec("SELECT info FROM consumers WHERE expire_at>=?", (time.time(),))
        else:
            rows = self._exec("SELECT info FROM consumers WHERE queue=? AND expire_at>=?", (queue, time.time()))
        return [loads_state(r[0]) for r in rows]

    def remove_consumer(self, consumer_id):
        self._exec("DELETE FROM consumers WHERE consumer_id=?", (consumer_id,))

    # ---- kills
    def request_kill(self, queue, task_id, ttl=3600):
        self._exec("INSERT OR REPLACE INTO kills VALUES (?,?,?)", (queue, task_id, time.time() + ttl))

    def kill_requests(self, queue):
        return {r[0] for r in self._exec("SELECT task_id FROM kills WHERE queue=? AND expire_at>=?",
                                         (queue, time.time()))}

    # ---- statuses
    # Records are stored a batch per row (the JSON array as the engine serialised it), plus one small
    # index row per record (tbl, task_id) -> batch. A row per record with its JSON and two indexes cost
    # SQLite ~10 us of CPU per record, as much as a whole trivial task on a 2-core host; a batch row plus
    # an index row cost ~3 us.
    # Queries read the few batches whose time span overlaps the request.
    _BATCH_ROWS = 1000  # records per batch row from save_statuses (the engine sends batches of about this size)

    def save_statuses(self, table, records, ttl):
        for i in range(0, len(records), self._BATCH_ROWS):
            chunk = records[i:i + self._BATCH_ROWS]
            self._save_batch(table, dumps_state_bytes(chunk), [r["task_id"] for r in chunk],
                             [r.get("time_start") or 0.0 for r in chunk], ttl)

    def save_status_batch(self, table, batch, ttl):
        if len(batch):
            self._save_batch(table, batch.json, batch.task_ids, batch.time_starts, ttl)

    def _save_batch(self, table: str, data: bytes, task_ids: list, time_starts: list, ttl: float) -> None:
        """One row for the batch (its records' JSON array, never parsed here) and an index row per record."""
        if not task_ids:
            return
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            cur = c.execute("INSERT INTO status_batches (tbl, t_min, t_max, expire_at, data) VALUES (?,?,?,?,?)",
                            (table, min(time_starts), max(time_starts), time.time() + ttl, data.decode()))
            batch_id = cur.lastrowid
            if self._json1:  # the ids as one JSON array that SQLite unpacks itself, GIL released
                c.execute("INSERT OR REPLACE INTO status_ids SELECT ?, value, ? FROM json_each(?)",
                          (table, batch_id, dumps_state(task_ids)))
            else:
                c.executemany("INSERT OR REPLACE INTO status_ids VALUES (?,?,?)",
                              [(table, t, batch_id) for t in task_ids])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self._gc()

    def _current(self, table: str, batch_id: int, recs: dict) -> list:
        """The records of ``recs`` (task id -> record of batch ``batch_id``) that are still the latest
        for their task id (a later run of the same task replaces the earlier record)."""
        if not recs:
            return []
        ids = list(recs)
        current = []
        for i in range(0, len(ids), 500):  # stays under SQLite's bound-parameter limit
            part = ids[i:i + 500]
            rows = self._exec(f"SELECT task_id FROM status_ids WHERE tbl=? AND batch_id=? AND task_id IN "
                              f"({','.join('?' * len(part))})", (table, batch_id, *part))
            current.extend(recs[r[0]] for r in rows)
        return current

    def query_statuses(self, table, *, task_id=None, success=None, since=None, until=None, limit=100):
        now = time.time()

        def keep(r: Any) -> bool:
            ts = record_time_start(r)
            return ((success is None or record_success(r) == bool(success))
                    and (since is None or ts >= since) and (until is None or ts <= until))

        if task_id is not None:
            rows = self._exec("SELECT b.data FROM status_ids i JOIN status_batches b ON b.id = i.batch_id "
                              "WHERE i.tbl=? AND i.task_id=? AND b.expire_at>=?", (table, task_id, now))
            found = [r for r in loads_state(rows[0][0]) if record_task_id(r) == task_id] if rows else []
            return [expand_record(found[-1])] if found and keep(found[-1]) else []
        sql, args = "SELECT id, t_max, data FROM status_batches WHERE tbl=? AND expire_at>=?", [table, now]
        if since is not None:
            sql += " AND t_max>=?"; args.append(since)
        if until is not None:
            sql += " AND t_min<=?"; args.append(until)
        sql += " ORDER BY t_max DESC"
        out: list = []
        for batch_id, t_max, data in self._conn().execute(sql, tuple(args)):
            if len(out) >= limit and (t_max or 0.0) < record_time_start(out[limit - 1]):
                break  # every record from here on is older than the ones already chosen
            recs = {}
            for r in loads_state(data):
                if keep(r):
                    recs[record_task_id(r)] = r  # the last one in a batch wins
            out.extend(self._current(table, batch_id, recs))
            out.sort(key=record_time_start, reverse=True)
        return [expand_record(r) for r in out[:limit]]

    # ---- locks: one row per lock; taking it is a single conditional upsert, atomic in SQLite
    def acquire_lock(self, name, owner, ttl):
        now = time.time()
        c = self._conn()
        cur = c.execute("INSERT INTO locks VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, "
                        "expire_at=excluded.expire_at WHERE locks.owner=excluded.owner OR locks.expire_at<=?",
                        (name, owner, now + ttl, now))
        self._gc()
        return cur.rowcount == 1

    def release_lock(self, name, owner):
        cur = self._conn().execute("DELETE FROM locks WHERE name=? AND owner=? AND expire_at>?",
                                   (name, owner, time.time()))
        return cur.rowcount == 1
