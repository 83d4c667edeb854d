"""POSTGRES: an at-least-once queue in PostgreSQL tables (psycopg 3).

Life of a message (one row of ``<schema>.messages``):

``publish``  one multi-row INSERT from arrays (``unnest``): one round trip per batch, and one NOTIFY
``fetch``    ``SELECT ... FOR UPDATE SKIP LOCKED`` of up to N due rows (priority desc, then id), marked in
             flight with this broker's ``consumer_id`` in the same statement; when nothing is due the
             consumer sleeps on LISTEN (woken by publish/requeue/reclaim NOTIFYs, or at the next eta)
``ack``      DELETE the rows (one statement per batch)
``requeue``  back to waiting, with a new id: the tail of its priority
``reject``   one statement moves the rows, annotated with the reason, to the queue ``<queue>_dlx``

Delay: ``available_at`` in the future; such rows are counted as delayed and skipped by fetch.

Liveness-based reclaim (never a visibility timeout), on core's :class:`funboost.engine.liveness.ConsumerLease`
(identity after fork, renewal on the process's liveness ticker): each consumer has a row in
``<schema>.consumers`` renewed every ``heartbeat_interval`` seconds; every ``reclaim_interval`` seconds the
renewal statement also puts back the in-flight rows of dead consumers of the queue. The verdict is taken
by the server, on its own clock: a consumer is dead when its lease is older than ``heartbeat_timeout``,
or (``check_pid``, here the server-side form of "its process is gone", valid across hosts) when its
database session (``pg_backend_pid``) no longer exists after a short grace: a SIGKILLed process loses its
sockets at once, so its rows come back within seconds. A task of a live consumer is never taken from it,
however long it runs. Leases older than the server's start count from the start, so a server restart
does not make everyone look dead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import psycopg
from psycopg import sql
from pydantic import Field

from funboost.engine.liveness import ConsumerLease, LeaseInfo, LivenessOptions
from funboost.plugins.broker import (Broker, BrokerOptions, Capabilities, Delivery, OutgoingMessage,
                                     QueueSize, annotate_dead_letter, dead_letter_queue_name)

logger = logging.getLogger("funboost.postgres")

ENV_DSN = "FUNBOOST_POSTGRES_DSN"
ENV_SCHEMA = "FUNBOOST_POSTGRES_SCHEMA"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_SCHEMA = "funboost"

T = TypeVar("T")

# Statements that create the tables; run once per (process, dsn, schema) under an advisory lock, because
# concurrent "CREATE ... IF NOT EXISTS" can still collide in the catalog.
_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.messages (
    id           bigserial PRIMARY KEY,
    queue        text        NOT NULL,
    priority     integer     NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    consumer     text,
    deliveries   integer     NOT NULL DEFAULT 0,
    task_id      text,
    published_at timestamptz NOT NULL DEFAULT now(),
    fetched_at   timestamptz,
    body         text        NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_waiting ON {s}.messages (queue, priority DESC, id) WHERE consumer IS NULL;
CREATE INDEX IF NOT EXISTS messages_held ON {s}.messages (queue, consumer) WHERE consumer IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.consumers (
    id          text PRIMARY KEY,
    queue       text        NOT NULL,
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    backend_pid integer,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS consumers_by_queue ON {s}.consumers (queue);
"""

_PUBLISH = """
WITH ins AS (
    INSERT INTO {s}.messages (queue, priority, available_at, task_id, body)
    SELECT %s, u.p, coalesce(to_timestamp(u.eta), now()), u.t, u.b
    FROM unnest(%s::int[], %s::float8[], %s::text[], %s::text[]) AS u(p, eta, t, b)
    RETURNING 1)
SELECT pg_notify(%s, %s) FROM (SELECT 1 FROM ins LIMIT 1) AS one
"""

_CLAIM = """
WITH picked AS (
    SELECT id FROM {s}.messages
    WHERE queue = %s AND consumer IS NULL AND available_at <= now()
    ORDER BY priority DESC, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED)
UPDATE {s}.messages AS m SET consumer = %s, deliveries = m.deliveries + 1, fetched_at = now()
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.priority, m.deliveries, m.body
"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(available_at) - now())::float8 FROM {s}.messages
WHERE queue = %s AND consumer IS NULL AND available_at > now()
"""

_ACK = "DELETE FROM {s}.messages WHERE id = ANY(%s) AND consumer = %s"

_REQUEUE = """
WITH back AS (
    UPDATE {s}.messages SET consumer = NULL, id = nextval({seq})
    WHERE id = ANY(%s) AND consumer = %s
    RETURNING 1)
SELECT pg_notify(%s, '') FROM (SELECT 1 FROM back LIMIT 1) AS one
"""

_REJECT = """
WITH gone AS (
    DELETE FROM {s}.messages WHERE id = ANY(%s) AND consumer = %s
    RETURNING id, priority, task_id),
moved AS (
    INSERT INTO {s}.messages (queue, priority, task_id, body)
    SELECT %s, g.priority, g.task_id, b.body
    FROM gone AS g JOIN unnest(%s::bigint[], %s::text[]) AS b(id, body) ON b.id = g.id
    RETURNING 1)
SELECT pg_notify(%s, '') FROM (SELECT 1 FROM moved LIMIT 1) AS one
"""

# Who released what the last time the connection broke in the middle of a claim: rows marked with our id
# that we never received. Only this consumer can know which they are.
_RELEASE_UNKNOWN = """
UPDATE {s}.messages SET consumer = NULL
WHERE queue = %s AND consumer = %s AND NOT (id = ANY(%s))
"""

# The lease renewal: upsert our row. The server's clock and our session's backend pid are recorded.
_RENEW = """
INSERT INTO {s}.consumers AS c (id, queue, host, pid, backend_pid)
VALUES (%(me)s, %(q)s, %(host)s, %(pid)s, pg_backend_pid())
ON CONFLICT (id) DO UPDATE SET last_seen = now(), backend_pid = pg_backend_pid()
"""

_INT32_MAX = 2**31 - 1

# The consumers of a queue known to be dead: lease older than the heartbeat timeout, or (check_pid) no
# database session any more after the grace. Shared by the reclaim pass and the purge.
_DEAD_CONSUMERS = """
    SELECT c.id FROM {s}.consumers AS c
    WHERE c.queue = %(q)s AND c.id <> %(me)s
      AND (greatest(c.last_seen, pg_postmaster_start_time()) < now() - make_interval(secs => %(timeout)s)
           OR (%(session)s
               AND greatest(c.last_seen, pg_postmaster_start_time()) < now() - make_interval(secs => %(grace)s)
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = c.backend_pid)))"""

# The renewal with a reclaim pass, in one statement (one round trip): renew, put back the rows of dead
# consumers of this queue (and rows whose holder has no lease at all, e.g. deleted by hand), drop the dead
# leases, and wake the fetchers if anything came back. Data-modifying CTEs always run; ``note`` is
# referenced so that it runs too. ``%(session)s`` false = verdict by lease age only.
_RENEW_AND_RECLAIM = """
WITH beat AS (
    INSERT INTO {s}.consumers AS c (id, queue, host, pid, backend_pid)
    VALUES (%(me)s, %(q)s, %(host)s, %(pid)s, pg_backend_pid())
    ON CONFLICT (id) DO UPDATE SET last_seen = now(), backend_pid = pg_backend_pid()
    RETURNING 1),
dead AS (""" + _DEAD_CONSUMERS + """),
back AS (
    UPDATE {s}.messages AS m SET consumer = NULL
    WHERE m.queue = %(q)s AND m.consumer IS NOT NULL AND m.consumer <> %(me)s
      AND (m.consumer IN (SELECT id FROM dead)
           OR (m.fetched_at < now() - make_interval(secs => %(grace)s)
               AND NOT EXISTS (SELECT 1 FROM {s}.consumers AS c WHERE c.id = m.consumer)))
    RETURNING 1),
gone AS (
    DELETE FROM {s}.consumers WHERE id IN (SELECT id FROM dead) RETURNING 1),
note AS (
    SELECT pg_notify(%(chan)s, '') FROM (SELECT 1 FROM back LIMIT 1) AS one)
SELECT (SELECT count(*) FROM back), (SELECT count(*) FROM gone), (SELECT count(*) FROM note)
"""

_SIZES = """
SELECT count(*) FILTER (WHERE consumer IS NULL AND available_at <= now()),
       count(*) FILTER (WHERE consumer IS NOT NULL),
       count(*) FILTER (WHERE consumer IS NULL AND available_at > now())
FROM {s}.messages WHERE queue = %s
"""

# What waits, and what dead consumers held (it would come back at the next reclaim pass and run after the
# purge); a living consumer's in-flight rows stay. Rows whose holder has no lease at all count as dead after
# the grace, as in the reclaim pass.
_PURGE = """
WITH dead AS (""" + _DEAD_CONSUMERS + """),
gone AS (
    DELETE FROM {s}.consumers WHERE id IN (SELECT id FROM dead) RETURNING 1)
DELETE FROM {s}.messages AS m
WHERE m.queue = %(q)s
  AND (m.consumer IS NULL OR m.consumer IN (SELECT id FROM dead)
       OR (m.fetched_at < now() - make_interval(secs => %(grace)s)
           AND NOT EXISTS (SELECT 1 FROM {s}.consumers AS c WHERE c.id = m.consumer)))
"""

_UNREGISTER = """
DELETE FROM {s}.consumers WHERE id = %s
  AND NOT EXISTS (SELECT 1 FROM {s}.messages WHERE queue = %s AND consumer = %s)
"""


def _host_name() -> str:
    return socket.gethostname()


def channel_name(schema: str, queue_name: str) -> str:
    """The NOTIFY channel of a queue: a hash, because channel names are identifiers (at most 63 bytes)."""
    digest = hashlib.sha1(f"{schema}\x00{queue_name}".encode("utf-8")).hexdigest()[:24]
    return f"funboost_{digest}"


class PostgresOptions(BrokerOptions, LivenessOptions):
    """``broker_exclusive_config`` of the postgres broker. Liveness settings (``heartbeat_interval`` 2 s,
    ``heartbeat_timeout`` 10 s, ``reclaim_interval`` = heartbeat_interval, ``check_pid``) come from core's
    :class:`~funboost.engine.liveness.LivenessOptions`; ``check_pid`` is checked by the server as "the
    consumer's database session is gone", which also works across hosts."""

    dsn: str = Field(default_factory=lambda: os.environ.get(ENV_DSN, DEFAULT_DSN),
                     description=f"libpq connection string or URL (default: env {ENV_DSN}, else {DEFAULT_DSN})")
    db_schema: str = Field(default_factory=lambda: os.environ.get(ENV_SCHEMA, DEFAULT_SCHEMA),
                           min_length=1, max_length=63,
                           description=f"schema of the queue tables, created if missing (env {ENV_SCHEMA})")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to wait for one connection attempt")
    reconnect_timeout: float = Field(
        60.0, gt=0, description="how long publish/ack keep retrying while the server is unreachable")

    @property
    def disconnect_grace(self) -> float:
        """A consumer whose session is gone is dead after this long (time to reconnect and beat again)."""
        return min(self.heartbeat_timeout, 2 * self.heartbeat_interval)


_schemas_ready: set[tuple[str, str]] = set()
_schemas_lock = threading.Lock()
_inherited: list[Any] = []  # connections inherited through fork: never closed here (see _after_fork)


def _cooperative_waits() -> None:
    """psycopg waits for its socket with a C function (``wait_c``) that blocks the whole OS thread; it
    switches to a select-based wait by itself only under gevent. Under eventlet's monkey-patching that C
    wait froze the hub: every other green thread (the tasks, the main thread, signal handling) stopped
    while a consumer waited for a NOTIFY. Use psycopg's ``wait_select``, which eventlet makes cooperative."""
    import sys
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is None:
        return
    try:
        if not patcher.is_monkey_patched("select"):
            return
        from psycopg import waiting
        if waiting.wait is getattr(waiting, "wait_c", None):
            waiting.wait = waiting.wait_select
    except Exception:  # noqa: BLE001 - an unexpected psycopg/eventlet layout: keep psycopg's own choice
        logger.debug("could not make psycopg's waits cooperative under eventlet", exc_info=True)


def _connect(o: PostgresOptions) -> psycopg.Connection:
    _cooperative_waits()
    conn = psycopg.connect(o.dsn, autocommit=True, connect_timeout=max(1, int(round(o.connect_timeout))))
    key = (o.dsn, o.db_schema)
    if key not in _schemas_ready:
        with _schemas_lock:
            if key not in _schemas_ready:
                _create_schema(conn, o.db_schema)
                _schemas_ready.add(key)
    return conn


def _create_schema(conn: psycopg.Connection, schema: str) -> None:
    ddl = sql.SQL(_DDL).format(s=sql.Identifier(schema))
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"funboost_postgres:{schema}",))
        conn.execute(ddl)


class PostgresBroker(Broker):
    kind = "postgres"
    aliases = ("postgresql", "postgres_queue")
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=True, ordering="priority", queue_size="exact", in_flight_count=True, purge=True,
        broadcast=False, request_response=False, cross_process=True, max_priority=2**31 - 1)
    options_model = PostgresOptions

    def __init__(self, queue_name: str, options: Optional[PostgresOptions] = None) -> None:
        super().__init__(queue_name, options)
        o: PostgresOptions = self.options  # type: ignore[assignment]
        self._o = o
        self.channel = channel_name(o.db_schema, queue_name)
        s = sql.Identifier(o.db_schema)
        seq = sql.Literal(f"{s.as_string()}.messages_id_seq")

        def q(text: str) -> bytes:
            return sql.SQL(text).format(s=s, seq=seq).as_bytes()  # type: ignore[return-value]
        self._sql_publish, self._sql_claim, self._sql_next_due = q(_PUBLISH), q(_CLAIM), q(_NEXT_DUE)
        self._sql_ack, self._sql_requeue, self._sql_reject = q(_ACK), q(_REQUEUE), q(_REJECT)
        self._sql_release, self._sql_sizes = q(_RELEASE_UNKNOWN), q(_SIZES)
        self._sql_renew, self._sql_renew_reclaim = q(_RENEW), q(_RENEW_AND_RECLAIM)
        self._sql_purge, self._sql_unregister = q(_PURGE), q(_UNREGISTER)
        self._pid = os.getpid()
        self._lock = threading.RLock()  # guards the main connection (publish, claim, ack, heartbeat)
        self._conn: Optional[psycopg.Connection] = None
        self._listen_conn: Optional[psycopg.Connection] = None  # LISTEN + claims: the fetching thread only
        # identity after fork, renewal on the process's liveness ticker, reclaim schedule (the first renewal
        # reclaims at once: it recovers a crashed predecessor's work)
        self._lease = ConsumerLease(queue_name, self.consumer_id, heartbeat_interval=o.heartbeat_interval,
                                    heartbeat_timeout=o.heartbeat_timeout, renew=self._renew_lease,
                                    reclaim_interval=o.reclaim_interval, check_pid=o.check_pid)
        self._registered = False
        self._held: set[int] = set()  # ids handed out and not settled yet
        self._claim_uncertain = False  # the connection broke during a claim: rows may be ours unknowingly
        self._outage_logged = False
        self._closed = False

    # ---------------------------------------------------------------- connections
    @classmethod
    def check_available(cls, options: PostgresOptions) -> Optional[str]:
        try:
            with psycopg.connect(options.dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            return f"cannot connect to PostgreSQL ({_redact(options.dsn)}): {exc}".strip()
        return None

    def _after_fork(self) -> None:
        """A connection must never cross a fork: the child opens its own and is a consumer of its own.
        The inherited ones are kept referenced and never closed (closing would end the parent's session)."""
        self._pid = os.getpid()
        _inherited.extend(c for c in (self._conn, self._listen_conn) if c is not None)
        self._conn = self._listen_conn = None
        self._lock = threading.RLock()
        self._lease.check_fork()  # a new consumer id: the parent's in-flight work stays the parent's
        self.consumer_id = self._lease.consumer_id
        self._registered = False
        self._held = set()
        self._claim_uncertain = False

    def _main(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = _connect(self._o)
        return conn

    def _drop_main(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, fn: Callable[[psycopg.Connection], T], deadline: Optional[float], what: str) -> T:
        """Run ``fn(connection)`` on the main connection; on a broken connection reconnect with backoff and
        retry until ``deadline`` (monotonic; ``None`` = one attempt). Every caller's statement is one
        autocommit transaction, so a retry either repeats a statement that never committed, or one whose
        effect is idempotent or at-least-once (a publish may then store a message twice)."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed:
            self._closed = False  # used again after close(): comes back to life
        delay = 0.05
        while True:
            try:
                with self._lock:
                    try:
                        result = fn(self._main())
                    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                        if not _connection_lost(self._conn, exc):
                            raise  # a real error of the statement, not of the connection
                        self._drop_main()
                        raise
                if self._outage_logged:
                    self._outage_logged = False
                    logger.warning("queue %r: PostgreSQL reachable again", self.queue_name)
                return result
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._conn is not None:
                    raise
                if deadline is None or time.monotonic() + delay > deadline:
                    raise
                if not self._outage_logged:
                    self._outage_logged = True
                    logger.warning("queue %r: PostgreSQL unreachable during %s (%s); retrying",
                                   self.queue_name, what, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _retry_deadline(self) -> float:
        return time.monotonic() + self._o.reconnect_timeout

    # ---------------------------------------------------------------- publish
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        prios: list[int] = []
        etas: list[Optional[float]] = []
        tids: list[Optional[str]] = []
        bodies: list[str] = []
        now = time.time()
        all_delayed = True
        for m in messages:
            # the column is a 32-bit integer: clamped, as the sqlalchemy kind does (psycopg refused 2**31)
            prios.append(max(-_INT32_MAX, min(_INT32_MAX, m.priority or 0)))
            eta = m.eta if m.eta is not None and m.eta > now else None
            all_delayed = all_delayed and eta is not None
            etas.append(eta)
            tids.append(m.task_id or None)
            body = m.body
            bodies.append(body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body)
        # a NOTIFY payload with an eta lets a sleeping fetcher set its alarm instead of querying now
        payload = repr(min(e for e in etas if e is not None)) if all_delayed else ""
        params = (self.queue_name, prios, etas, tids, bodies, self.channel, payload)
        self._run(lambda c: c.execute(self._sql_publish, params), self._retry_deadline(), "publish")

    # ---------------------------------------------------------------- fetch
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        if self._pid != os.getpid():
            self._after_fork()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                # the fetching thread's own connection: LISTEN first (nothing published after the claim is
                # missed), and claims run there too, in parallel with acks and publishes on the main one
                conn = self._listener()
                if not self._registered or not self._lease.running:
                    self._register()
                got = self._claim(conn, max_count)
                if got or time.monotonic() >= deadline:
                    return got
                due = self._next_due(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not _connection_lost(self._listen_conn, exc):
                    raise  # an error of the statement itself
                self._drop_listener()
                if not self._outage_logged:
                    self._outage_logged = True
                    logger.warning("queue %r: PostgreSQL unreachable (%s); retrying", self.queue_name, exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                time.sleep(min(0.2, left))
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            # then claim again (also once at the deadline: a wake-up that came right then is not lost)
            self._wait_for_notify(conn, left if due is None else min(left, max(0.001, due)))

    def _listener(self) -> psycopg.Connection:
        conn = self._listen_conn
        if conn is None or conn.closed or conn.broken:
            self._drop_listener()
            conn = _connect(self._o)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._listen_conn = conn
        return conn

    def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _wait_for_notify(self, conn: psycopg.Connection, wait: float) -> None:
        """Sleep until a NOTIFY for this queue arrives or ``wait`` seconds pass. A NOTIFY whose payload is an
        eta in the future (a delayed publish) only moves the alarm earlier."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            woke = False
            for note in conn.notifies(timeout=left, stop_after=1):
                if note.payload:
                    try:
                        delay = float(note.payload) - time.time()
                    except ValueError:
                        delay = 0.0
                    if delay > 0.001:
                        end = min(end, time.monotonic() + delay)
                        continue
                woke = True
                break
            if woke:
                # drop the wake-ups that queued meanwhile (one per publish): the claim that follows sees all
                # of them, so each would only cost an empty claim
                for _note in conn.notifies(timeout=0):
                    pass
                return

    def _claim(self, conn: psycopg.Connection, max_count: int) -> list[Delivery]:
        cid = self.consumer_id
        if self._claim_uncertain:
            conn.execute(self._sql_release, (self.queue_name, cid, list(self._held)))
            self._claim_uncertain = False
        try:
            rows = conn.execute(self._sql_claim, (self.queue_name, max_count, cid)).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            # the UPDATE may have committed before the connection broke: those rows carry our id and would
            # stay in flight as long as we live. Release them once we are connected again.
            self._claim_uncertain = True
            raise
        if self._outage_logged:
            self._outage_logged = False
            logger.warning("queue %r: PostgreSQL reachable again", self.queue_name)
        if not rows:
            return []
        rows.sort(key=lambda r: (-r[1], r[0]))
        self._held.update(r[0] for r in rows)
        return [Delivery(body=body, tag=mid, redelivered=n > 1) for mid, _prio, n, body in rows]

    def _next_due(self, conn: psycopg.Connection) -> Optional[float]:
        row = conn.execute(self._sql_next_due, (self.queue_name,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # ---------------------------------------------------------------- liveness
    def _register(self) -> None:
        """The first renewal (our row exists before anything is marked with our id), then the ticker."""
        self._lease.start(renew_now=False)
        self._run(lambda c: self._renew_lease(self._lease.info()), None, "lease renewal")
        self._registered = True

    def _renew_lease(self, lease: LeaseInfo) -> int:
        """Upsert our lease; when a reclaim pass is due, in the same statement put back the in-flight rows
        of dead consumers. Returns how many rows came back. Called from the ticker (one round trip)."""
        o = self._o
        params = {"me": lease.consumer_id, "q": self.queue_name, "host": lease.host, "pid": lease.pid}
        if not self._lease.reclaim_due():
            self._run(lambda c: c.execute(self._sql_renew, params), None, "lease renewal")
            return 0
        params.update(timeout=o.heartbeat_timeout, grace=o.disconnect_grace, chan=self.channel,
                      session=o.check_pid)
        row = self._run(lambda c: c.execute(self._sql_renew_reclaim, params).fetchone(), None, "reclaim")
        reclaimed = int(row[0]) if row else 0
        if reclaimed:
            logger.warning("queue %r: %d in-flight message(s) of dead consumer(s) put back", self.queue_name,
                           reclaimed)
        return reclaimed

    def reclaim_now(self) -> int:
        """Renew and reclaim at once (the ticker does this every ``reclaim_interval``)."""
        self._lease.restart_reclaim_schedule()
        return self._renew_lease(self._lease.info())

    # ---------------------------------------------------------------- settle
    def _settle(self, deliveries: Sequence[Delivery]) -> list[int]:
        ids = [d.tag for d in deliveries]
        self._held.difference_update(ids)
        return ids

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        params = (self._settle(deliveries), self.consumer_id)
        self._run(lambda c: c.execute(self._sql_ack, params), self._retry_deadline(), "ack")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        params = (self._settle(deliveries), self.consumer_id, self.channel)
        self._run(lambda c: c.execute(self._sql_requeue, params), self._retry_deadline(), "requeue")

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Move to ``<queue>_dlx`` in one statement: the message is either still here or there, never both
        nor neither."""
        if not deliveries:
            return
        dlx = dead_letter_queue_name(self.queue_name)
        bodies = [annotate_dead_letter(d.body, reason) for d in deliveries]
        params = (self._settle(deliveries), self.consumer_id, dlx, [d.tag for d in deliveries], bodies,
                  channel_name(self._o.db_schema, dlx))
        self._run(lambda c: c.execute(self._sql_reject, params), self._retry_deadline(), "reject")

    # ---------------------------------------------------------------- sizes
    def queue_size(self) -> QueueSize:
        # one attempt: a size is a sample (the consumer's metrics thread asks every few seconds, and a
        # graceful stop waits for that thread), so an outage must not make it wait reconnect_timeout
        row = self._run(lambda c: c.execute(self._sql_sizes, (self.queue_name,)).fetchone(), None, "queue_size")
        ready, in_flight, delayed = row  # type: ignore[misc]
        return QueueSize(ready=int(ready), in_flight=int(in_flight), delayed=int(delayed))

    def purge(self) -> int:
        o = self._o
        params = {"q": self.queue_name, "me": self.consumer_id, "timeout": o.heartbeat_timeout,
                  "grace": o.disconnect_grace, "session": o.check_pid}
        return self._run(lambda c: c.execute(self._sql_purge, params).rowcount, self._retry_deadline(), "purge")

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        self._lease.stop()  # waits for a renewal in progress: none happens after the row is deleted
        try:
            if self._registered:
                # with work still in flight our row stays: the rows come back once our session is gone
                # (after the grace) or the heartbeat expires, never while a task here might still run
                self._run(lambda c: c.execute(self._sql_unregister,
                                              (self.consumer_id, self.queue_name, self.consumer_id)),
                          None, "close")
        except Exception as exc:  # closing must not raise because the server went away
            logger.warning("queue %r: could not unregister consumer %s: %s", self.queue_name, self.consumer_id,
                           exc)
        finally:
            self._registered = False
            with self._lock:
                self._drop_main()
            self._drop_listener()
            self._closed = True
            super().close()


def _connection_lost(conn: Optional[psycopg.Connection], exc: Optional[BaseException] = None) -> bool:
    """True if ``conn`` is unusable: never opened, closed, broken, or ended by the server (SQLSTATE class
    08 connection exception, 57 operator intervention: admin/crash shutdown, server starting up)."""
    if conn is None or conn.closed or conn.broken:
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("08", "57") and state != "57014"  # 57014: statement canceled (a timeout)


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        params = conninfo_to_dict(dsn)
        if "password" in params:
            params["password"] = "***"
        return make_conninfo(**params)
    except Exception:
        return "<dsn>"
