"""SQLALCHEMY: an at-least-once queue in two tables of any database SQLAlchemy 2 speaks.

Tested on PostgreSQL, MariaDB/MySQL and sqlite files; written in SQLAlchemy Core only, so any dialect with
transactions works. One row of ``<prefix>messages`` per message:

``publish``  one multi-row INSERT (executemany) per batch
``limits``   the columns keep the widths of the first release (tables of earlier versions stay valid). On
             databases that enforce them (all but sqlite) a value longer than its column (queue name > 255,
             consumer id > 128, task id > 64 characters) is stored in a bounded form, a prefix of it + ``~``
             + 16 hex digits of its sha256 (the consumer id keeps its ``:<pid>:<random>`` tail), and every
             statement uses that form; a priority outside +-(2**31 - 1) is clamped to that range (``rank``
             is a 32-bit column; sqlite's integers are 64-bit). sqlite stores every value as it is.
``fetch``    claims up to N due rows (``rank`` = -priority, then id) in one transaction, marking them with
             this broker's ``consumer_id``. How the rows are claimed depends on the dialect (option
             ``claim``): ``skip_locked`` (PostgreSQL, MySQL >= 8, MariaDB >= 10.6, Oracle): SELECT ... FOR
             UPDATE SKIP LOCKED then UPDATE, so concurrent consumers never wait for each other;
             ``update`` (sqlite and any other dialect): one atomic ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)
             AND consumer IS NULL``, then the claimed rows are read back by (consumer, claim stamp);
             ``for_update`` (old MySQL): SELECT ... FOR UPDATE (consumers take turns) then UPDATE.
``ack``      DELETE (guarded by the consumer id); ``requeue``: re-inserted at the tail, original deleted;
``reject``   moved to the queue ``<queue>_dlx`` in one transaction.

Waiting: there is no portable notification, so an idle fetch polls, backing off from ``poll_min`` to
``poll_max``; a publish in the same process wakes the fetchers of that queue at once, and an idle fetch
sleeps no longer than until the next delayed message is due.

Liveness-based reclaim (core's :class:`funboost.engine.liveness.ConsumerLease`): each consumer's lease row
in ``<prefix>queue_consumers`` is renewed every ``heartbeat_interval`` by the process's liveness ticker; every
``reclaim_interval`` a consumer puts back the in-flight rows of holders whose lease is older than
``heartbeat_timeout`` or missing, or (``check_pid``) that ran on this host in a process that is gone.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Literal, Optional, Sequence, TypeVar

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import event, exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from funboost.engine.liveness import ConsumerLease, LeaseInfo, LivenessOptions
from funboost.paths import user_data_dir
from funboost.plugins.broker import (Broker, BrokerOptions, Capabilities, Delivery, OutgoingMessage,
                                     QueueSize, annotate_dead_letter, dead_letter_queue_name,
                                     new_consumer_id)
from funboost.process_local import ProcessLocalDict, fork_generation

logger = logging.getLogger("funboost.sqlalchemy")

ENV_URL = "FUNBOOST_SQLALCHEMY_URL"
ENV_PREFIX = "FUNBOOST_SQLALCHEMY_TABLE_PREFIX"
DEFAULT_PREFIX = "funboost_"
_CHUNK = 500  # ids per "IN (...)" list: under every dialect's parameter limit

T = TypeVar("T")
ClaimMode = Literal["auto", "skip_locked", "update", "for_update"]

# widths of the columns as created by every version so far (existing tables keep them: see _bounded)
QUEUE_LEN = 255
CONSUMER_LEN = 128
TASK_ID_LEN = 64
RANK_MAX = 2**31 - 1  # "rank" is a 32-bit INTEGER; -priority is clamped to +-RANK_MAX
RANK_MAX_SQLITE = 2**63 - 1  # sqlite enforces no VARCHAR widths, and its INTEGER is 64-bit


def _bounded(value: str, limit: int, tail: str = "") -> str:
    """``value`` itself when it fits ``limit`` characters; else a form that does and names the same value:
    a prefix of it, ``~``, 16 hex digits of the sha256 of the whole value, then ``tail`` (which must end
    ``value``). Normal-length values are stored as they are, so tables of earlier versions keep working."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
    head = value[:max(0, limit - len(tail) - len(digest) - 1)]
    return f"{head}~{digest}{tail}"[-limit:]


def bounded_queue(queue_name: str) -> str:
    """What the ``queue`` columns hold for ``queue_name``."""
    return _bounded(queue_name, QUEUE_LEN)


def bounded_consumer_id(consumer_id: str) -> str:
    """A consumer id that fits the ``consumer`` column, keeping its unique ``:<pid>:<random>`` tail."""
    cut = consumer_id.rfind(":", 0, max(0, consumer_id.rfind(":")))
    tail = consumer_id[cut:] if cut > 0 and len(consumer_id) - cut <= 40 else ""
    return _bounded(consumer_id, CONSUMER_LEN, tail)


def _new_bounded_consumer_id(queue_name: str) -> str:
    return bounded_consumer_id(new_consumer_id(queue_name))


def bounded_task_id(task_id: Optional[str]) -> Optional[str]:
    """What the ``task_id`` column holds (it is only copied along with the row; the body has the full id)."""
    return _bounded(task_id, TASK_ID_LEN) if task_id else None


def priority_rank(priority: Optional[int], rank_max: int = RANK_MAX) -> int:
    """``rank`` of a message: -priority, the priority clamped to +-``rank_max``."""
    return -max(-rank_max, min(rank_max, int(priority or 0)))


def default_url() -> str:
    """A sqlite file in the per-user data directory (never the current directory)."""
    return f"sqlite:///{os.path.join(str(user_data_dir()), 'sqlalchemy_queues.sqlite3')}"


class SqlAlchemyOptions(BrokerOptions, LivenessOptions):
    """``broker_exclusive_config`` of the sqlalchemy broker (liveness settings: core's LivenessOptions)."""

    url: str = Field(default_factory=lambda: os.environ.get(ENV_URL) or default_url(),
                     description=f"SQLAlchemy database URL (env {ENV_URL}; default: a sqlite file in the "
                                 "user data directory)")
    table_prefix: str = Field(default_factory=lambda: os.environ.get(ENV_PREFIX, DEFAULT_PREFIX),
                              pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$",
                              description=f"prefix of the two table names (env {ENV_PREFIX})")
    claim: ClaimMode = Field("auto", description="how rows are claimed; auto: skip_locked where the "
                                                 "dialect has it, else update")
    poll_min: float = Field(0.01, gt=0, description="first sleep of an idle fetch")
    poll_max: float = Field(0.5, gt=0, description="longest sleep of an idle fetch (latency of publishes "
                                                   "from other processes)")
    reconnect_timeout: float = Field(60.0, gt=0, description="how long publish/ack retry while the "
                                                             "database is unreachable")
    engine_options: dict[str, Any] = Field(default_factory=dict,
                                           description="extra keyword arguments of sqlalchemy.create_engine")


# ------------------------------------------------------------------------------------ tables and engines
def make_tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    md = sa.MetaData()
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # sqlite: INTEGER PRIMARY KEY = rowid
    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    messages = sa.Table(
        f"{prefix}messages", md,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("consumer", sa.String(128), nullable=True),
        # -priority: one ascending index serves "priority desc, id asc" on every database
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("available_at", sa.Double, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("published_at", sa.Double, nullable=False),
        sa.Column("fetched_at", sa.Double, nullable=True),
        sa.Column("body", long_text, nullable=False),
        sa.Index(f"{prefix}messages_claim", "queue", "consumer", "rank", "id"),
    )
    # "<prefix>queue_consumers", not "<prefix>consumers": that is the sqlalchemy state backend's heartbeat
    # table (another schema), and both run on one database with the same default prefix
    consumers = sa.Table(
        f"{prefix}queue_consumers", md,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Index(f"{prefix}queue_consumers_queue", "queue"),
    )
    return md, messages, consumers


def _sqlite_setup(engine: Engine) -> None:
    """sqlite: WAL, a busy timeout, and BEGIN IMMEDIATE (the write lock up front: a transaction never has
    to upgrade a read lock, the case where sqlite fails at once instead of waiting)."""
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # the driver's own BEGIN handling off; we emit BEGIN below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _build_engine(url: str, extra: dict[str, Any]) -> Engine:
    u = sa.engine.make_url(url)
    kw: dict[str, Any] = {"pool_pre_ping": True, "future": True}
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(u.database)) or ".", exist_ok=True)
        kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif "poolclass" not in extra:
        kw.update(pool_size=5, max_overflow=10, pool_recycle=3600)
    kw.update(extra)
    engine = sa.create_engine(u, **kw)
    if u.get_backend_name() == "sqlite":
        _sqlite_setup(engine)
    return engine


# One engine (pool) per (process, url, options): a pool must not cross a fork. In a child, the parent's
# pools are dropped without closing the parent's connections (SQLAlchemy's dispose(close=False)).
_engines: ProcessLocalDict[str, Engine] = ProcessLocalDict(on_stale=lambda e: e.dispose(close=False))
_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()
# same-process wake-ups: a publish notifies the fetchers of its queue at once
_wakeups: ProcessLocalDict[tuple[str, str, str], "_Wakeup"] = ProcessLocalDict()


class _Wakeup:
    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.seq = 0

    def notify(self) -> None:
        with self.cond:
            self.seq += 1
            self.cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self.cond:
            if self.seq == seen:
                self.cond.wait(timeout)


def _is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back and may simply be run again."""
    orig = getattr(exc, "orig", None)
    state = str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")
    errno = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return state in ("40001", "40P01") or errno in (1213, 1205)  # mysql: deadlock, lock wait timeout


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.DBAPIError) and not _is_conflict(exc) and (
        exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)))


class SqlAlchemyBroker(Broker):
    kind = "sqlalchemy"
    aliases = ("sqlachemy",)  # the original funboost's spelling
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=True, ordering="priority", queue_size="exact", in_flight_count=True, purge=True,
        broadcast=False, request_response=False, cross_process=True, max_priority=2**31 - 1)
    options_model = SqlAlchemyOptions

    def __init__(self, queue_name: str, options: Optional[SqlAlchemyOptions] = None) -> None:
        super().__init__(queue_name, options)
        o: SqlAlchemyOptions = self.options  # type: ignore[assignment]
        self._o = o
        self._md, self.messages, self.consumers = make_tables(o.table_prefix)
        # what the queue and consumer columns hold: the names themselves unless they are too long for a
        # database that enforces the widths (sqlite does not: there every value is stored as it is, as before)
        self._widths = sa.engine.make_url(o.url).get_backend_name() != "sqlite"
        self._qkey = self._queue_key(queue_name)
        self.consumer_id = self._consumer_key(self.consumer_id)
        self._gen = fork_generation()
        self._lease = ConsumerLease(queue_name, self.consumer_id, heartbeat_interval=o.heartbeat_interval,
                                    heartbeat_timeout=o.heartbeat_timeout, renew=self._renew_lease,
                                    reclaim=self._reclaim_dead, reclaim_interval=o.reclaim_interval,
                                    check_pid=o.check_pid,
                                    new_id=_new_bounded_consumer_id if self._widths else None)
        self._registered = False
        self._claim_mode: Optional[str] = None
        self._last_stamp = 0.0
        self._poll = o.poll_min
        self._wake = _wakeups.get_or_create((o.url, o.table_prefix, queue_name), _Wakeup)

    # ---------------------------------------------------------------- column values
    def _queue_key(self, queue_name: str) -> str:
        return bounded_queue(queue_name) if self._widths else queue_name

    def _consumer_key(self, consumer_id: str) -> str:
        return bounded_consumer_id(consumer_id) if self._widths else consumer_id

    def _task_key(self, task_id: Optional[str]) -> Optional[str]:
        return (bounded_task_id(task_id) if self._widths else task_id) or None

    def _rank(self, priority: Optional[int]) -> int:
        return priority_rank(priority, RANK_MAX if self._widths else RANK_MAX_SQLITE)

    # ---------------------------------------------------------------- engine
    @property
    def engine(self) -> Engine:
        o = self._o
        key = f"{o.url}\x00{sorted(o.engine_options.items())!r}"
        engine = _engines.get_or_create(key, lambda: _build_engine(o.url, o.engine_options))
        if (key, o.table_prefix) not in _created:
            with _created_lock:
                if (key, o.table_prefix) not in _created:
                    self._create_tables(engine)
                    _created.add((key, o.table_prefix))
        return engine

    def _create_tables(self, engine: Engine) -> None:
        for attempt in range(3):
            try:
                self._md.create_all(engine, checkfirst=True)
                return
            except (sa_exc.ProgrammingError, sa_exc.OperationalError, sa_exc.IntegrityError):
                # another process created them between our check and our CREATE: look again
                if attempt == 2:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _check_fork(self) -> None:
        if self._gen != fork_generation():
            self._gen = fork_generation()
            self._lease.check_fork()  # a new consumer id: the parent's in-flight work stays the parent's
            self.consumer_id = self._lease.consumer_id
            self._registered = False
            self._wake = _wakeups.get_or_create((self._o.url, self._o.table_prefix, self.queue_name), _Wakeup)

    def _tx(self, fn: Callable[[Connection], T], deadline: Optional[float], what: str) -> T:
        """Run ``fn`` in one transaction; on a lost connection retry until ``deadline`` (``None``: once).
        A transaction that failed was rolled back, so a retry never applies it twice (a commit whose
        acknowledgement was lost may: publish is at-least-once then)."""
        self._check_fork()
        delay = 0.05
        conflicts = 0
        while True:
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except sa_exc.DBAPIError as exc:
                if _is_conflict(exc) and conflicts < 10:
                    conflicts += 1  # e.g. two claims locking index ranges in opposite orders
                    time.sleep(0.001 * conflicts)
                    continue
                if not _is_disconnect(exc) or deadline is None or time.monotonic() + delay > deadline:
                    raise
                logger.warning("queue %r: database unreachable during %s (%s); retrying", self.queue_name,
                               what, exc.orig)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _deadline(self) -> float:
        return time.monotonic() + self._o.reconnect_timeout

    @classmethod
    def check_available(cls, options: SqlAlchemyOptions) -> Optional[str]:
        try:
            engine = _build_engine(options.url, {**options.engine_options, "poolclass": sa.pool.NullPool})
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
        except Exception as exc:
            url = sa.engine.make_url(options.url).render_as_string(hide_password=True)
            return f"cannot connect to {url}: {type(exc).__name__}: {exc}".splitlines()[0]
        return None

    # ---------------------------------------------------------------- publish
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = time.time()
        rows = []
        for m in messages:
            body = m.body.decode("utf-8") if isinstance(m.body, (bytes, bytearray)) else m.body
            rows.append({"queue": self._qkey, "consumer": None, "rank": self._rank(m.priority),
                         "available_at": m.eta if m.eta is not None and m.eta > now else now,
                         "deliveries": 0, "task_id": self._task_key(m.task_id), "published_at": now,
                         "body": body})
        ins = self.messages.insert()
        self._tx(lambda c: c.execute(ins, rows), self._deadline(), "publish")
        self._wake.notify()

    # ---------------------------------------------------------------- fetch
    def _mode(self) -> str:
        if self._claim_mode is None:
            mode = self._o.claim
            if mode == "auto":
                d = self.engine.dialect
                if d.name == "postgresql" or d.name == "oracle":
                    mode = "skip_locked"
                elif d.name in ("mysql", "mariadb"):
                    with self.engine.connect():  # server_version_info is known once connected
                        pass
                    v = d.server_version_info or (0,)
                    mariadb = getattr(d, "is_mariadb", False)
                    mode = "skip_locked" if (v >= (10, 6) if mariadb else v >= (8, 0, 1)) else "for_update"
                else:
                    mode = "update"
            self._claim_mode = mode
        return self._claim_mode

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        self._check_fork()
        o = self._o
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            seen = self._wake.seq
            next_due: Optional[float] = None
            try:
                if not self._registered or not self._lease.running:
                    self._register()
                got = self._claim(max_count)
                if got:
                    self._poll = o.poll_min
                    return got
                next_due = self._next_due()
            except sa_exc.DBAPIError as exc:
                if not _is_disconnect(exc):
                    raise
                logger.warning("queue %r: database unreachable during fetch (%s)", self.queue_name, exc.orig)
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            wait = min(self._poll, left)
            if next_due is not None:
                wait = min(wait, max(0.001, next_due - time.time()))
            self._wake.wait(seen, wait)
            self._poll = min(self._poll * 2, o.poll_max)

    def _stamp(self) -> float:
        # strictly increasing per broker: the claim stamp identifies the rows of one "update" claim
        now = max(time.time(), self._last_stamp + 1e-6)
        self._last_stamp = now
        return now

    def _claim(self, max_count: int) -> list[Delivery]:
        m = self.messages
        me = self.consumer_id
        mode = self._mode()
        now = self._stamp()
        due = sa.and_(m.c.queue == self._qkey, m.c.consumer.is_(None), m.c.available_at <= now)
        cols = (m.c.id, m.c.deliveries, m.c.body)

        def claim(c: Connection) -> list[Any]:
            if mode == "update":
                # the LIMITed pick is wrapped in a derived table: MySQL/MariaDB refuse "IN (SELECT ... LIMIT)"
                # and a subquery on the table being updated, but accept a materialized derived table
                pick = sa.select(m.c.id).where(due).order_by(m.c.rank, m.c.id).limit(max_count).subquery("pick")
                n = c.execute(sa.update(m).where(m.c.id.in_(sa.select(pick.c.id)), m.c.consumer.is_(None))
                              .values(consumer=me, deliveries=m.c.deliveries + 1, fetched_at=now)).rowcount
                if not n:
                    return []
                return c.execute(sa.select(*cols).where(m.c.queue == self._qkey, m.c.consumer == me,
                                                        m.c.fetched_at == now)
                                 .order_by(m.c.rank, m.c.id)).all()
            q = sa.select(*cols).where(due).order_by(m.c.rank, m.c.id).limit(max_count)
            rows = c.execute(q.with_for_update(skip_locked=(mode == "skip_locked"))).all()
            if rows:
                ids = [r[0] for r in rows]
                c.execute(sa.update(m).where(m.c.id.in_(ids))
                          .values(consumer=me, deliveries=m.c.deliveries + 1, fetched_at=now))
            return [(i, n + 1, b) for i, n, b in rows]

        rows = self._tx(claim, None, "fetch")
        return [Delivery(body=body, tag=mid, redelivered=n > 1) for mid, n, body in rows]

    def _next_due(self) -> Optional[float]:
        m = self.messages
        q = sa.select(sa.func.min(m.c.available_at)).where(m.c.queue == self._qkey, m.c.consumer.is_(None),
                                                           m.c.available_at > time.time())
        with self.engine.connect() as c:
            v = c.execute(q).scalar()
        return None if v is None else float(v)

    # ---------------------------------------------------------------- liveness
    def _register(self) -> None:
        """The lease is written before any row carries our id; the ticker renews it and reclaims."""
        self._lease.start()
        self._registered = True

    def _renew_lease(self, lease: LeaseInfo) -> None:
        cons = self.consumers

        def renew(c: Connection) -> None:
            # only this consumer writes its own row: an UPDATE, and an INSERT when there is none yet (or a
            # reclaim pass deleted it while we were frozen), works as an upsert on every dialect
            n = c.execute(sa.update(cons).where(cons.c.id == lease.consumer_id)
                          .values(last_seen=lease.last_seen, pid=lease.pid, host=lease.host)).rowcount
            if not n:
                c.execute(sa.insert(cons).values(id=lease.consumer_id, queue=self._qkey, host=lease.host,
                                                 pid=lease.pid, last_seen=lease.last_seen))
        try:
            self._tx(renew, None, "lease renewal")
        except sa_exc.IntegrityError:
            # two renewals of this consumer overlapped (the first one at start and the ticker's, on a slow
            # database): the other inserted the row between this UPDATE and INSERT, so it exists now
            self._tx(renew, None, "lease renewal")

    def _reclaim_dead(self) -> int:
        """Put back the in-flight rows of dead holders of this queue (one transaction)."""
        m, cons = self.messages, self.consumers

        def reclaim(c: Connection) -> int:
            holders = [r[0] for r in c.execute(sa.select(m.c.consumer).distinct().where(
                m.c.queue == self._qkey, m.c.consumer.is_not(None)))]
            if not holders:
                return 0
            leases = {r.id: LeaseInfo(r.id, r.host, r.pid, r.last_seen) for r in c.execute(
                sa.select(cons.c.id, cons.c.host, cons.c.pid, cons.c.last_seen).where(cons.c.id.in_(holders)))}
            dead = self._lease.dead_holders(holders, leases)
            if not dead:
                return 0
            n = c.execute(sa.update(m).where(m.c.queue == self._qkey, m.c.consumer.in_(dead))
                          .values(consumer=None)).rowcount
            c.execute(sa.delete(cons).where(cons.c.id.in_(dead)))
            logger.warning("queue %r: %d in-flight message(s) of dead consumer(s) %s put back",
                           self.queue_name, n, ", ".join(dead))
            return n
        n = self._tx(reclaim, None, "reclaim")
        if n:
            self._wake.notify()
        return n

    def reclaim_now(self) -> int:
        """A reclaim pass now (the ticker runs one every ``reclaim_interval``)."""
        return self._reclaim_dead()

    # ---------------------------------------------------------------- settle
    def _chunks(self, deliveries: Sequence[Delivery]) -> list[list[int]]:
        ids = [d.tag for d in deliveries]
        return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        m, me = self.messages, self.consumer_id

        def ack(c: Connection) -> None:
            for part in self._chunks(deliveries):
                c.execute(sa.delete(m).where(m.c.id.in_(part), m.c.consumer == me))
        self._tx(ack, self._deadline(), "ack")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Back to waiting at the tail of its priority (a new id), keeping its delivery count."""
        if not deliveries:
            return
        m, me = self.messages, self.consumer_id
        now = time.time()
        copy_cols = ["queue", "rank", "available_at", "deliveries", "task_id", "published_at", "body"]

        def requeue(c: Connection) -> None:
            for part in self._chunks(deliveries):
                held = sa.and_(m.c.id.in_(part), m.c.consumer == me)
                src = sa.select(m.c.queue, m.c.rank, sa.literal(now, sa.Double), m.c.deliveries, m.c.task_id,
                                m.c.published_at, m.c.body).where(held).order_by(m.c.id)
                c.execute(sa.insert(m).from_select(copy_cols, src))
                c.execute(sa.delete(m).where(held))
        self._tx(requeue, self._deadline(), "requeue")
        self._wake.notify()

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Move to ``<queue>_dlx`` in one transaction: the message is here or there, never both/neither."""
        if not deliveries:
            return
        m, me = self.messages, self.consumer_id
        dlx = dead_letter_queue_name(self.queue_name)
        dlx_key = self._queue_key(dlx)
        bodies = {d.tag: annotate_dead_letter(d.body, reason) for d in deliveries}
        now = time.time()

        def move(c: Connection) -> None:
            for part in self._chunks(deliveries):
                held = sa.and_(m.c.id.in_(part), m.c.consumer == me)
                owned = c.execute(sa.select(m.c.id, m.c.rank, m.c.task_id).where(held)).all()
                if not owned:
                    continue
                c.execute(m.insert(), [{"queue": dlx_key, "consumer": None, "rank": rank, "available_at": now,
                                        "deliveries": 0, "task_id": tid, "published_at": now,
                                        "body": bodies[mid]} for mid, rank, tid in owned])
                c.execute(sa.delete(m).where(held))
        self._tx(move, self._deadline(), "reject")
        _wakeups.get_or_create((self._o.url, self._o.table_prefix, dlx), _Wakeup).notify()

    # ---------------------------------------------------------------- sizes
    def queue_size(self) -> QueueSize:
        m = self.messages
        now = time.time()
        waiting = m.c.consumer.is_(None)
        q = sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((sa.and_(waiting, m.c.available_at <= now), 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((m.c.consumer.is_not(None), 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((sa.and_(waiting, m.c.available_at > now), 1), else_=0)), 0),
        ).where(m.c.queue == self._qkey)
        # one attempt: a size is a sample (the consumer's metrics thread asks every few seconds, and a
        # graceful stop waits for that thread), so an outage must not make it wait reconnect_timeout
        ready, in_flight, delayed = self._tx(lambda c: c.execute(q).one(), None, "queue_size")
        return QueueSize(ready=int(ready), in_flight=int(in_flight), delayed=int(delayed))

    def purge(self) -> int:
        """What waits, and what consumers known to be dead held (it would come back at the next reclaim pass
        and run after the purge); a living consumer's in-flight rows stay."""
        self._reclaim_dead()
        m = self.messages
        stmt = sa.delete(m).where(m.c.queue == self._qkey, m.c.consumer.is_(None))
        return int(self._tx(lambda c: c.execute(stmt).rowcount, self._deadline(), "purge"))

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        self._lease.stop()  # waits for a renewal in progress: none happens after the lease is deleted
        try:
            if self._registered and self._gen == fork_generation():
                m, cons, me = self.messages, self.consumers, self.consumer_id

                def unregister(c: Connection) -> None:
                    # with work still in flight the lease stays: it expires (or the pid vanishes) and the
                    # rows come back then, never while a task of this process might still be running
                    held = c.execute(sa.select(m.c.id).where(m.c.queue == self._qkey, m.c.consumer == me)
                                     .limit(1)).first()
                    if held is None:
                        c.execute(sa.delete(cons).where(cons.c.id == me))
                self._tx(unregister, None, "close")
        except Exception as exc:  # closing must not raise because the database went away
            logger.warning("queue %r: could not unregister consumer %s: %s", self.queue_name, self.consumer_id,
                           exc)
        finally:
            self._registered = False
            super().close()
