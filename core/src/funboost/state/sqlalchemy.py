"""SQL state backend through SQLAlchemy 2.x: PostgreSQL, MySQL/MariaDB, SQLite, or any dialect it supports.

For users who want status records (and the rest of the control plane) in a real database they already run
and query with SQL. Chosen with ``BoosterParams(state_backend="sqlalchemy")`` or env
``FUNBOOST_STATE_BACKEND=sqlalchemy``; the URL comes from ``FUNBOOST_STATE_SQLALCHEMY_URL``, e.g.
``postgresql://postgres@127.0.0.1:5432/test`` (needs the driver: ``pip install psycopg2-binary``), else a
SQLite file in the user data dir. Tables are created on first use, named with the prefix
``FUNBOOST_STATE_SQLALCHEMY_PREFIX`` (default ``funboost_``). Install with ``pip install funboost-core[sqlalchemy]``.

Status records keep their main fields in real columns (queue, task id, success, run status, times, error
type, host, pid) beside the full record as JSON text, so they can be queried directly in SQL.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Optional

from funboost.exceptions import StateBackendError
from funboost.paths import user_data_dir
from funboost.process_local import ProcessLocal
from funboost.records import complete_record
from funboost.state.base import StateBackend, dumps_state, loads_state
from funboost.state.batched import text_needle
from funboost.timeseries import MetricRow

try:
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
except ImportError as _exc:  # pragma: no cover - only without the optional dependency
    raise StateBackendError("the 'sqlalchemy' state backend needs SQLAlchemy 2.x: "
                            "pip install 'funboost-core[sqlalchemy]'") from _exc

ENV_URL = "FUNBOOST_STATE_SQLALCHEMY_URL"
ENV_PREFIX = "FUNBOOST_STATE_SQLALCHEMY_PREFIX"


_dumps = dumps_state


def _default_url() -> str:
    return f"sqlite:///{user_data_dir() / 'state_sqlalchemy.sqlite3'}"


def _tables(prefix: str) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    md = sa.MetaData()
    s = sa.String
    t = {
        "results": sa.Table(prefix + "results", md,
                            sa.Column("task_id", s(191), primary_key=True),
                            sa.Column("data", sa.Text, nullable=False),
                            sa.Column("expire_at", sa.Double, nullable=False, index=True)),
        # filter keys are argument JSON of any length: the primary key is their sha256
        "filters": sa.Table(prefix + "filters", md,
                            sa.Column("queue", s(191), primary_key=True),
                            sa.Column("key_hash", s(64), primary_key=True),
                            sa.Column("expire_at", sa.Double, nullable=True)),
        "flags": sa.Table(prefix + "flags", md,
                          sa.Column("queue", s(191), primary_key=True),
                          sa.Column("name", s(191), primary_key=True),
                          sa.Column("value", sa.Text)),
        "consumers": sa.Table(prefix + "consumers", md,
                              sa.Column("consumer_id", s(191), primary_key=True),
                              sa.Column("queue", s(191), index=True),
                              sa.Column("info", sa.Text),
                              sa.Column("expire_at", sa.Double, index=True)),
        "kills": sa.Table(prefix + "kills", md,
                          sa.Column("queue", s(191), primary_key=True),
                          sa.Column("task_id", s(191), primary_key=True),
                          sa.Column("expire_at", sa.Double)),
        "statuses": sa.Table(prefix + "statuses", md,
                             sa.Column("tbl", s(191), primary_key=True),
                             sa.Column("task_id", s(191), primary_key=True),
                             sa.Column("queue_name", s(191)),
                             sa.Column("success", sa.Boolean),
                             sa.Column("run_status", s(32)),
                             sa.Column("run_times", sa.Integer),
                             sa.Column("time_start", sa.Double),
                             sa.Column("time_end", sa.Double),
                             sa.Column("time_cost", sa.Double),
                             sa.Column("exception_type", s(191)),
                             sa.Column("host", s(191)),
                             sa.Column("pid", sa.Integer),
                             sa.Column("data", sa.Text, nullable=False),
                             sa.Column("expire_at", sa.Double, index=True),
                             sa.Index(prefix + "statuses_time", "tbl", "time_start")),
        # the web manager's documents (queue catalog, audit log, users) and metric rows (funboost.admin)
        "docs": sa.Table(prefix + "docs", md,
                         sa.Column("coll", s(64), primary_key=True),
                         sa.Column("key", s(191), primary_key=True),
                         sa.Column("value", sa.Text, nullable=False),
                         sa.Column("expire_at", sa.Double, nullable=True)),
        "metrics": sa.Table(prefix + "metrics", md,
                            sa.Column("res", s(8), primary_key=True),
                            sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
                            sa.Column("queue", s(191), primary_key=True),
                            sa.Column("source", s(191), primary_key=True),
                            sa.Column("data", sa.Text, nullable=False),
                            sa.Column("expire_at", sa.Double, index=True)),
        "locks": sa.Table(prefix + "locks", md,
                          sa.Column("name", s(191), primary_key=True),
                          sa.Column("owner", s(191), nullable=False),
                          sa.Column("expire_at", sa.Double, nullable=False)),
    }
    return md, t


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) in SQLAlchemy 2.1 and psycopg2 in 2.0: use whichever is installed."""
    u = sa.engine.make_url(url)
    if u.drivername == "postgresql":
        import importlib.util
        for mod, drv in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
            if importlib.util.find_spec(mod) is not None:
                return u.set(drivername=drv).render_as_string(hide_password=False)
    return url


def _make_engine(url: str) -> sa.Engine:
    url = _with_installed_driver(url)
    kw: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
    eng = sa.create_engine(url, **kw)
    if eng.dialect.name == "sqlite":
        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    return eng


class SqlAlchemyStateBackend(StateBackend):
    name = "sqlalchemy"
    shared_across_processes = True

    def __init__(self, url: Optional[str] = None) -> None:
        url = url or os.environ.get(ENV_URL) or _default_url()
        super().__init__(url)
        self.prefix = os.environ.get(ENV_PREFIX, "funboost_")
        self.metadata, self.t = _tables(self.prefix)
        # one engine (connection pool) per process: pooled connections must not cross a fork; in a child
        # the parent's pool is dropped without closing its connections (they are the parent's)
        self._engine: ProcessLocal[sa.Engine] = ProcessLocal(
            lambda: _make_engine(url), on_stale=lambda eng: eng.dispose(close=False))
        self._last_gc = 0.0
        self._create_tables()

    # ------------------------------------------------------------------ plumbing
    @property
    def engine(self) -> sa.Engine:
        """One engine (connection pool) per process: pooled connections must not cross a fork."""
        return self._engine.get()

    def _create_tables(self) -> None:
        for attempt in range(3):
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                # another process created the same tables at the same moment: check again
                if attempt == 2:
                    raise
                time.sleep(0.2)

    @classmethod
    def check_available(cls, url: Optional[str] = None) -> Optional[str]:
        url = url or os.environ.get(ENV_URL) or _default_url()
        try:
            eng = _make_engine(url)
            try:
                with eng.connect() as c:
                    c.execute(sa.text("SELECT 1"))
            finally:
                eng.dispose()
        except Exception as exc:  # any failure means "not usable", with the reason
            safe = sa.engine.make_url(url).render_as_string(hide_password=True)
            return f"database at {safe} is not reachable: {type(exc).__name__}: {exc}"
        return None

    def _upsert(self, conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
        """Insert or replace ``rows`` by primary key, with the dialect's native upsert when it has one."""
        if not rows:
            return
        pk = [c.name for c in table.primary_key.columns]
        # one statement must not touch a row twice (PostgreSQL refuses): keep the last of duplicates
        rows = list({tuple(r[k] for k in pk): r for r in rows}.values())
        others = [c.name for c in table.columns if c.name not in pk]
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert
            else:  # the same on_conflict_do_update API
                from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
            stmt = upsert(table)
            stmt = stmt.on_conflict_do_update(index_elements=pk, set_={c: stmt.excluded[c] for c in others})
            conn.execute(stmt, rows)
        elif dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as mysql_insert
            mstmt = mysql_insert(table)
            mstmt = mstmt.on_duplicate_key_update(**{c: mstmt.inserted[c] for c in others})
            conn.execute(mstmt, rows)
        else:  # portable fallback inside the caller's transaction
            for r in rows:
                conn.execute(table.delete().where(sa.and_(*[table.c[k] == r[k] for k in pk])))
            conn.execute(table.insert(), rows)

    def _gc(self) -> None:
        now = time.time()
        if now - self._last_gc < 60:
            return
        self._last_gc = now
        try:
            with self.engine.begin() as c:
                for t in self.t.values():
                    if "expire_at" in t.c:
                        c.execute(t.delete().where(t.c.expire_at.is_not(None), t.c.expire_at < now - 5))
        except Exception:  # housekeeping only; the next round retries
            pass

    # ------------------------------------------------------------------ results
    def set_result(self, task_id: str, status: dict, ttl: float) -> None:
        with self.engine.begin() as c:
            self._upsert(c, self.t["results"], [{"task_id": task_id, "data": _dumps(status),
                                                 "expire_at": time.time() + ttl}])
        self._gc()

    def get_result(self, task_id: str) -> Optional[dict]:
        t = self.t["results"]
        with self.engine.connect() as c:
            v = c.execute(sa.select(t.c.data).where(t.c.task_id == task_id, t.c.expire_at >= time.time())).scalar()
        return loads_state(v) if v is not None else None

    # ------------------------------------------------------------------ filters
    @staticmethod
    def _h(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def filter_add(self, queue: str, key: str, ttl: Optional[float]) -> None:
        with self.engine.begin() as c:
            self._upsert(c, self.t["filters"], [{"queue": queue, "key_hash": self._h(key),
                                                 "expire_at": (time.time() + ttl) if ttl else None}])

    def filter_contains(self, queue: str, key: str) -> bool:
        t = self.t["filters"]
        q = sa.select(sa.literal(1)).where(t.c.queue == queue, t.c.key_hash == self._h(key),
                                            sa.or_(t.c.expire_at.is_(None), t.c.expire_at >= time.time()))
        with self.engine.connect() as c:
            return c.execute(q).first() is not None

    def filter_clear(self, queue: str) -> None:
        t = self.t["filters"]
        with self.engine.begin() as c:
            c.execute(t.delete().where(t.c.queue == queue))

    # ------------------------------------------------------------------ flags
    def set_flag(self, queue: str, name: str, value: Any) -> None:
        with self.engine.begin() as c:
            self._upsert(c, self.t["flags"], [{"queue": queue, "name": name, "value": json.dumps(value)}])

    def get_flags(self, queue: str) -> dict:
        t = self.t["flags"]
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.name, t.c.value).where(t.c.queue == queue)).all()
        return {n: loads_state(v) for n, v in rows}

    # ------------------------------------------------------------------ heartbeats
    def heartbeat(self, consumer_id: str, queue: str, info: dict, ttl: float) -> None:
        now = time.time()
        data = {**info, "consumer_id": consumer_id, "queue": queue, "last_seen": now}
        with self.engine.begin() as c:
            self._upsert(c, self.t["consumers"], [{"consumer_id": consumer_id, "queue": queue,
                                                   "info": _dumps(data), "expire_at": now + ttl}])
        self._gc()

    def live_consumers(self, queue: Optional[str] = None) -> list[dict]:
        t = self.t["consumers"]
        q = sa.select(t.c.info).where(t.c.expire_at >= time.time())
        if queue is not None:
            q = q.where(t.c.queue == queue)
        with self.engine.connect() as c:
            return [loads_state(v) for v in c.execute(q).scalars()]

    def remove_consumer(self, consumer_id: str) -> None:
        t = self.t["consumers"]
        with self.engine.begin() as c:
            c.execute(t.delete().where(t.c.consumer_id == consumer_id))

    # ------------------------------------------------------------------ remote kill
    def request_kill(self, queue: str, task_id: str, ttl: float = 3600) -> None:
        with self.engine.begin() as c:
            self._upsert(c, self.t["kills"], [{"queue": queue, "task_id": task_id, "expire_at": time.time() + ttl}])

    def kill_requests(self, queue: str) -> set:
        t = self.t["kills"]
        with self.engine.connect() as c:
            return set(c.execute(sa.select(t.c.task_id).where(t.c.queue == queue,
                                                                t.c.expire_at >= time.time())).scalars())

    # ------------------------------------------------------------------ status records
    def save_statuses(self, table: str, records: list[dict], ttl: float) -> None:
        if not records:
            return
        exp = time.time() + ttl
        rows = [{"tbl": table, "task_id": r["task_id"], "queue_name": r.get("queue_name"),
                 "success": bool(r.get("success")), "run_status": r.get("run_status"),
                 "run_times": r.get("run_times"), "time_start": r.get("time_start"), "time_end": r.get("time_end"),
                 "time_cost": r.get("time_cost"), "exception_type": r.get("exception_type"),
                 "host": r.get("host"), "pid": r.get("pid"), "data": _dumps(r), "expire_at": exp}
                for r in records]
        with self.engine.begin() as c:  # one transaction per batch
            self._upsert(c, self.t["statuses"], rows)
        self._gc()

    def _statuses_select(self, table: str, task_id: Optional[str], success: Optional[bool], since: Optional[float],
                         until: Optional[float]) -> Any:
        """The live records of ``table`` that match the filters query_statuses and search_statuses share."""
        t = self.t["statuses"]
        q = sa.select(t.c.data).where(t.c.tbl == table, t.c.expire_at >= time.time())
        if task_id is not None:
            q = q.where(t.c.task_id == task_id)
        if success is not None:
            q = q.where(t.c.success == bool(success))
        if since is not None:
            q = q.where(t.c.time_start >= since)
        if until is not None:
            q = q.where(t.c.time_start <= until)
        return q

    def _status_records(self, q: Any) -> list[dict]:
        with self.engine.connect() as c:
            return [complete_record(loads_state(v)) for v in c.execute(q).scalars()]

    def query_statuses(self, table: str, *, task_id: Optional[str] = None, success: Optional[bool] = None,
                       since: Optional[float] = None, until: Optional[float] = None,
                       limit: int = 100) -> list[dict]:
        t = self.t["statuses"]
        q = self._statuses_select(table, task_id, success, since, until)
        q = q.order_by(t.c.time_start.desc()).limit(limit)
        return self._status_records(q)

    def search_statuses(self, table: str, *, success: Optional[bool] = None, since: Optional[float] = None,
                        until: Optional[float] = None, text: Optional[str] = None, task_id: Optional[str] = None,
                        before: Optional[tuple[float, str]] = None, limit: int = 50) -> list[dict]:
        # the (tbl, time_start) index gives newest first; the text is a LIKE on the record's JSON
        t = self.t["statuses"]
        q = self._statuses_select(table, task_id, success, since, until)
        if before is not None:
            b0, b1 = float(before[0]), str(before[1])
            q = q.where(sa.or_(t.c.time_start < b0, sa.and_(t.c.time_start == b0, t.c.task_id < b1)))
        if text:
            q = q.where(t.c.data.contains(text_needle(text), autoescape=True))
        q = q.order_by(t.c.time_start.desc(), t.c.task_id.desc()).limit(limit)
        return self._status_records(q)

    # ------------------------------------------------------------------ documents
    def doc_put(self, collection: str, key: str, value: dict, ttl: Optional[float] = None) -> None:
        with self.engine.begin() as c:
            self._upsert(c, self.t["docs"], [{"coll": collection, "key": key, "value": _dumps(value),
                                              "expire_at": (time.time() + ttl) if ttl else None}])

    def _live_docs(self, collection: str) -> Any:
        t = self.t["docs"]
        return sa.select(t.c.key, t.c.value).where(
            t.c.coll == collection, sa.or_(t.c.expire_at.is_(None), t.c.expire_at >= time.time()))

    def doc_get(self, collection: str, key: str) -> Optional[dict]:
        with self.engine.connect() as c:
            row = c.execute(self._live_docs(collection).where(self.t["docs"].c.key == key)).first()
        return loads_state(row[1]) if row is not None else None

    def doc_list(self, collection: str) -> dict[str, dict]:
        with self.engine.connect() as c:
            rows = c.execute(self._live_docs(collection).order_by(self.t["docs"].c.key)).all()
        return {k: loads_state(v) for k, v in rows}

    def doc_delete(self, collection: str, key: str) -> bool:
        t = self.t["docs"]
        with self.engine.begin() as c:
            return c.execute(t.delete().where(t.c.coll == collection, t.c.key == key)).rowcount == 1

    # ------------------------------------------------------------------ metrics
    def metrics_put(self, rows: list) -> None:
        if not rows:
            return
        now = time.time()
        with self.engine.begin() as c:
            self._upsert(c, self.t["metrics"], [{"res": r.res, "bucket": int(r.bucket), "queue": r.queue,
                                                 "source": r.source, "data": _dumps(r.data),
                                                 "expire_at": now + r.ttl} for r in rows])
        self._gc()

    def metrics_get(self, res: str, since: int, queue: Optional[str] = None) -> list:
        t = self.t["metrics"]
        q = sa.select(t.c.bucket, t.c.queue, t.c.source, t.c.data).where(
            t.c.res == res, t.c.bucket >= int(since), t.c.expire_at >= time.time())
        if queue is not None:
            q = q.where(t.c.queue == queue)
        with self.engine.connect() as c:
            return [MetricRow(res, int(b), qn, src, loads_state(d)) for b, qn, src, d in c.execute(q).all()]

    # ------------------------------------------------------------------ locks
    def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        # renew-or-take-over first (an UPDATE re-checks its WHERE on the newest row version, so two
        # contenders cannot both take an expired lock); if there is no row, the primary key lets only
        # one INSERT win
        t = self.t["locks"]
        now = time.time()
        with self.engine.begin() as c:
            r = c.execute(t.update().where(t.c.name == name, sa.or_(t.c.owner == owner, t.c.expire_at <= now))
                          .values(owner=owner, expire_at=now + ttl))
            if r.rowcount == 1:
                return True
        row = {"name": name, "owner": owner, "expire_at": now + ttl}
        try:
            with self.engine.begin() as c:
                dialect = c.dialect.name
                if dialect in ("postgresql", "sqlite"):  # no error (and no server log line) when taken
                    mod = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
                    # RETURNING, not rowcount: SQLAlchemy 2.1 reports rowcount -1 for this statement
                    r = c.execute(mod.insert(t).values(**row).on_conflict_do_nothing(index_elements=["name"])
                                  .returning(t.c.name))
                    won = r.first() is not None
                else:
                    c.execute(t.insert().values(**row))
                    won = True
        except IntegrityError:
            return False
        self._gc()
        return won

    def release_lock(self, name: str, owner: str) -> bool:
        t = self.t["locks"]
        with self.engine.begin() as c:
            r = c.execute(t.delete().where(t.c.name == name, t.c.owner == owner, t.c.expire_at > time.time()))
            return r.rowcount == 1

    def close(self) -> None:
        eng = self._engine.clear()
        if eng is not None:
            eng.dispose()
