"""SQLite state backend (the default): shared by every process on one host through one WAL database.

Location: ``FUNBOOST_STATE_SQLITE_PATH``, else ``<user data dir>/state.sqlite3``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Optional

from funboost.paths import user_data_dir
from funboost.state.base import StateBackend, dumps_state, loads_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (task_id TEXT PRIMARY KEY, data TEXT NOT NULL, expire_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS filters (queue TEXT, key TEXT, expire_at REAL, PRIMARY KEY (queue, key));
CREATE TABLE IF NOT EXISTS flags (queue TEXT, name TEXT, value TEXT, PRIMARY KEY (queue, name));
CREATE TABLE IF NOT EXISTS consumers (consumer_id TEXT PRIMARY KEY, queue TEXT, info TEXT, expire_at REAL);
CREATE TABLE IF NOT EXISTS kills (queue TEXT, task_id TEXT, expire_at REAL, PRIMARY KEY (queue, task_id));
CREATE TABLE IF NOT EXISTS statuses (tbl TEXT, task_id TEXT, success INTEGER, time_start REAL, data TEXT,
    expire_at REAL, PRIMARY KEY (tbl, task_id));
CREATE INDEX IF NOT EXISTS statuses_time ON statuses (tbl, time_start);
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
        for t in ("results", "filters", "consumers", "kills", "statuses", "locks"):
            c.execute(f"DELETE FROM {t} WHERE expire_at IS NOT NULL AND expire_at < ?", (now - 5,))

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
    def save_statuses(self, table, records, ttl):
        if not records:
            return
        exp = time.time() + ttl
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            if self._json1:
                # the whole batch as one JSON array that SQLite unpacks itself: one statement, run with
                # the GIL released, instead of a Python round per row (which starves the consumer threads)
                c.execute("INSERT OR REPLACE INTO statuses SELECT ?, json_extract(value, '$.task_id'), "
                          "coalesce(json_extract(value, '$.success'), 0), json_extract(value, '$.time_start'), "
                          "value, ? FROM json_each(?)", (table, exp, dumps_state(records)))
            else:
                c.executemany("INSERT OR REPLACE INTO statuses VALUES (?,?,?,?,?,?)",
                              [(table, r["task_id"], int(bool(r.get("success"))), r.get("time_start"),
                                dumps_state(r), exp) for r in records])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def query_statuses(self, table, *, task_id=None, success=None, since=None, until=None, limit=100):
        sql, args = "SELECT data FROM statuses WHERE tbl=? AND expire_at>=?", [table, time.time()]
        if task_id is not None:
            sql += " AND task_id=?"; args.append(task_id)
        if success is not None:
            sql += " AND success=?"; args.append(int(success))
        if since is not None:
            sql += " AND time_start>=?"; args.append(since)
        if until is not None:
            sql += " AND time_start<=?"; args.append(until)
        sql += " ORDER BY time_start DESC LIMIT ?"; args.append(limit)
        return [loads_state(r[0]) for r in self._exec(sql, tuple(args))]

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
