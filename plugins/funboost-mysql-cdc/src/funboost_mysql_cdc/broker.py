"""The ``MYSQL_CDC`` broker kind: every row inserted, updated or deleted in the watched tables of a MySQL
/ MariaDB server becomes one message (read from the binlog with mysql-replication).

How at-least-once works
-----------------------
A reader thread decodes row events into a bounded buffer; each row gets a local sequence number and its
binlog coordinates (file, start of its transaction, end of its rows event, index in the event). The
engine fetches from the buffer and acks out of order; :class:`~funboost.contiguous.ContiguousTracker`
gives the last row below which every row is finished, and that row's coordinates are the checkpoint,
written to the state backend (``set_flag`` under ``mysql_cdc:<queue>``) on every ack batch. A restart
streams again from the start of the checkpoint's transaction (a rows event cannot be decoded without
the table map that precedes it in its transaction) and skips the rows up to the checkpointed one. The
same resume point is used after a dropped connection or a server restart, with backoff.

One process per queue reads the binlog: a lock in the state backend (renewed while reading; taken over
at once from a holder on this host whose process is gone, else after ``reader_lock_ttl``).

``push`` / ``publish`` raise :class:`MysqlCdcPublishError`, except for the engine's own re-publication of
a row it holds (retry later / requeue): the copy goes back into the buffer and keeps the row's place in
the checkpoint until it finishes. Dead letters go to ``<queue>_dlx`` of ``dead_letter_kind`` (sqlite).
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pymysql
from pydantic import BaseModel
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from funboost.contiguous import ContiguousTracker
from funboost.engine.liveness import pid_gone
from funboost.message import build_envelope, dumps
from funboost.plugins.broker import (
    Broker, Capabilities, Delivery, OutgoingMessage, QueueSize,
)
from funboost.plugins.manager import resolve_broker_kind
from funboost.state.base import StateBackend, get_state_backend

from .errors import MysqlCdcError, MysqlCdcPublishError, MysqlCdcServerConfigError
from .options import MysqlCdcOptions

log = logging.getLogger("funboost.mysql_cdc")

_EVENT_KIND = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
# server error codes that no retry fixes: access denied (1044/1045), missing privilege (1227),
# binlog position gone or unreadable (1236)
_FATAL_SERVER_ERRORS = {1044: "access denied", 1045: "access denied", 1227: "missing privilege",
                        1236: "the binlog position cannot be read"}


# rows buffered before the waiting fetcher is woken (it is also woken at every transaction's end)
_WAKE_BATCH = 256


def _file_key(log_file: str) -> tuple[str, int, str]:
    """Order binlog file names by their numeric suffix (mysql-bin.000009 < mysql-bin.000010 <
    mysql-bin.1000000)."""
    base, _, suffix = log_file.rpartition(".")
    return (base, int(suffix), "") if suffix.isdigit() else (log_file, -1, suffix)


@dataclass(frozen=True)
class RowPosition:
    """Where a row is in the binlog. ``txn_pos``: the start of its transaction (where a resume streams
    from); ``event_pos``: the end of its rows event; ``row``: its index in that event. A position with
    ``row == -1`` is a transaction boundary with no row of it done."""

    log_file: str
    txn_pos: int
    event_pos: int = 0
    row: int = -1

    def order(self) -> tuple:
        return (_file_key(self.log_file), self.txn_pos, self.event_pos, self.row)

    def row_key(self) -> tuple:
        return (_file_key(self.log_file), self.event_pos, self.row)

    def as_dict(self) -> dict[str, Any]:
        return {"log_file": self.log_file, "txn_pos": self.txn_pos, "event_pos": self.event_pos, "row": self.row}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RowPosition":
        return cls(str(d["log_file"]), int(d["txn_pos"]), int(d.get("event_pos", 0)), int(d.get("row", -1)))


def _jsonable(value: Any) -> Any:
    """Column values the JSON codec does not take itself: bytes (UTF-8 text, else base64) and TIME
    columns (timedelta -> "HH:MM:SS[.ffffff]", negative allowed)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.timedelta):
        total = value.total_seconds()
        sign, total = ("-", -total) if total < 0 else ("", total)
        h, rem = divmod(total, 3600)
        m, s = divmod(rem, 60)
        return f"{sign}{int(h):02d}:{int(m):02d}:{s:09.6f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


_NEEDS_CONVERSION = (bytes, bytearray, dt.timedelta, dict, list)


def _row_values(values: dict) -> dict:
    for v in values.values():
        if isinstance(v, _NEEDS_CONVERSION):
            return {k: _jsonable(v) for k, v in values.items()}
    return values  # the common case: nothing to convert (one pass, no copy)


class CheckpointStore:
    """The queue's resume point and reader lock in the state backend."""

    def __init__(self, queue_name: str, backend: StateBackend) -> None:
        self.backend = backend
        self.key = f"mysql_cdc:{queue_name}"
        self.lock_name = f"mysql_cdc_reader:{queue_name}"

    def load(self) -> Optional[RowPosition]:
        raw = self.backend.get_flags(self.key).get("checkpoint")
        return RowPosition.from_dict(raw) if raw else None

    def save(self, pos: RowPosition) -> None:
        self.backend.set_flag(self.key, "checkpoint", pos.as_dict())

    def clear(self) -> None:
        self.backend.set_flag(self.key, "checkpoint", None)

    def acquire_reader(self, owner: str, ttl: float) -> bool:
        if self.backend.acquire_lock(self.lock_name, owner, ttl):
            self.backend.set_flag(self.key, "reader", {"owner": owner, "host": socket.gethostname(),
                                                       "pid": os.getpid()})
            return True
        info = self.backend.get_flags(self.key).get("reader") or {}
        # a holder that ran on this host and whose process is gone (kill -9) is replaced at once
        if (info.get("owner") and info["owner"] != owner and info.get("host") == socket.gethostname()
                and pid_gone(int(info.get("pid", 0)))):
            self.backend.release_lock(self.lock_name, info["owner"])
            if self.backend.acquire_lock(self.lock_name, owner, ttl):
                self.backend.set_flag(self.key, "reader", {"owner": owner, "host": socket.gethostname(),
                                                           "pid": os.getpid()})
                return True
        return False

    def release_reader(self, owner: str) -> None:
        self.backend.release_lock(self.lock_name, owner)


class MysqlCdcBroker(Broker):
    """Row changes of a MySQL / MariaDB server as messages; see ``docs/brokers/mysql-cdc.md``."""

    kind = "mysql_cdc"
    aliases = ()
    poll_while_busy = True  # renew the reader lock while every worker is busy
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=False,
        priority=False, ordering="fifo", queue_size="none", in_flight_count=False, purge=True,
        broadcast=False, request_response=False, cross_process=True, source_only=True)
    options_model = MysqlCdcOptions

    def __init__(self, queue_name: str, options: Optional[MysqlCdcOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: MysqlCdcOptions
        self._store: Optional[CheckpointStore] = None
        self._lock = threading.Lock()  # start/stop of the reader
        self._cond = threading.Condition()  # the buffer
        self._buffer: deque[Delivery] = deque()
        self._tracker = ContiguousTracker()
        self._positions: dict[int, tuple[RowPosition, str]] = {}  # seq -> (position, task_id), until checkpointed
        self._seq_by_task: dict[str, int] = {}
        self._acks_to_ignore: dict[int, int] = {}  # seq -> acks of originals whose copy was re-published
        self._next_seq = 0
        self._unannounced = 0  # rows put into the buffer since the fetcher was last woken
        self._pruned_below = 0
        self._ckpt_lock = threading.Lock()
        self._saved: Optional[RowPosition] = None
        self._reader: Optional[threading.Thread] = None
        self._stream: Optional[BinLogStreamReader] = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._fatal: Optional[BaseException] = None
        self._holding_lock = False
        self._lock_renewed_at = 0.0
        self._standby_logged = False
        self._closed = False
        self._pid = os.getpid()

    # ----- availability -----
    @classmethod
    def check_available(cls, options: BaseModel) -> Optional[str]:
        assert isinstance(options, MysqlCdcOptions)
        try:
            conn = pymysql.connect(**{**options.connection_settings(), "connect_timeout": 3})
            conn.close()
            return None
        except Exception as e:
            s = options.connection_settings()
            return (f"MySQL/MariaDB at {s['host']}:{s['port']} not usable as {s['user']!r}: {e} "
                    "(set FUNBOOST_MYSQL_CDC_HOST / _PORT / _USER / _PASSWORD)")

    # ----- publishing does not apply -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        copies = []
        for m in messages:
            seq = self._seq_by_task.get(m.task_id) if m.task_id else None
            if seq is None:
                raise MysqlCdcPublishError(
                    f"queue {self.queue_name!r} is a MYSQL_CDC queue: its messages are the row changes of "
                    f"the binlog, push()/publish() are not applicable (write to the watched tables instead)")
            copies.append((seq, m))
        with self._cond:
            for seq, m in copies:
                # the engine re-publishes a row it holds (retry later / requeue), then acks the original:
                # the copy keeps the row's place in the checkpoint until it finishes
                self._acks_to_ignore[seq] = self._acks_to_ignore.get(seq, 0) + 1
                self._buffer.appendleft(Delivery(body=m.body, tag=seq, redelivered=True))
            self._cond.notify_all()

    # ----- the state backend -----
    def _checkpoints(self) -> CheckpointStore:
        if self._store is None:
            self._store = CheckpointStore(self.queue_name, get_state_backend(self.options.state_backend))
        return self._store

    def _save_checkpoint(self, pos: RowPosition) -> None:
        """Write ``pos`` unless an equal or later one was written (never move backwards)."""
        with self._ckpt_lock:
            if self._saved is not None and pos.order() <= self._saved.order():
                return
            self._checkpoints().save(pos)
            self._saved = pos

    # ----- server checks -----
    def _control_connection(self) -> pymysql.connections.Connection:
        try:
            return pymysql.connect(**self.options.connection_settings(), cursorclass=pymysql.cursors.Cursor)
        except pymysql.err.OperationalError as e:
            self._raise_if_fatal(e, "connecting")
            raise

    def _raise_if_fatal(self, exc: BaseException, doing: str) -> None:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code in _FATAL_SERVER_ERRORS:
            s = self.options.connection_settings()
            hint = ""
            if code in (1227, 1044):
                hint = (" The CDC user needs the REPLICATION SLAVE (MySQL 8: REPLICATION REPLICA) and "
                        "REPLICATION CLIENT (MariaDB >= 10.5: BINLOG MONITOR) privileges, and SELECT on the "
                        "watched tables; see docs/brokers/mysql-cdc.md.")
            elif code == 1236:
                hint = " The checkpoint's binlog file may have been purged (binlog_expire_logs_seconds)."
            raise MysqlCdcServerConfigError(
                f"MYSQL_CDC queue {self.queue_name!r}: {_FATAL_SERVER_ERRORS[code]} while {doing} as "
                f"{s['user']!r}@{s['host']}:{s['port']}: {exc}.{hint}") from exc

    def _check_server(self, conn: pymysql.connections.Connection) -> tuple[bool, Optional[RowPosition]]:
        """Check the binlog settings; return (is_mariadb, the binlog's current end)."""
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            is_mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
            cur.execute("SHOW VARIABLES WHERE Variable_name IN "
                        "('log_bin', 'binlog_format', 'binlog_row_metadata', 'binlog_row_image')")
            settings = {str(k).lower(): str(v).upper() for k, v in cur.fetchall()}
        s = self.options.connection_settings()
        where = f"server {s['host']}:{s['port']}"
        wanted = [("log_bin", "ON", "log_bin (binary logging must be on)"),
                  ("binlog_format", "ROW", "binlog_format=ROW"),
                  ("binlog_row_image", "FULL", "binlog_row_image=FULL (before images of updates/deletes)"),
                  ("binlog_row_metadata", "FULL", "binlog_row_metadata=FULL (column names in the binlog)")]
        for name, value, what in wanted:
            have = settings.get(name)
            if have is None and name == "binlog_row_metadata":
                raise MysqlCdcServerConfigError(
                    f"MYSQL_CDC: {where} has no binlog_row_metadata setting (MySQL >= 8.0.14 or MariaDB >= "
                    f"10.5 needed): column names cannot be read from its binlog")
            if have != value:
                raise MysqlCdcServerConfigError(
                    f"MYSQL_CDC: {where} has {name}={have}; CDC needs {what}. See docs/brokers/mysql-cdc.md")
        end = None
        with conn.cursor() as cur:
            for statement in ("SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"):  # MySQL >= 8.2 / older
                try:
                    cur.execute(statement)
                except pymysql.err.ProgrammingError:
                    continue
                except pymysql.err.OperationalError as e:
                    self._raise_if_fatal(e, f"reading the binlog position ({statement})")
                    raise
                row = cur.fetchone()
                if row:
                    end = RowPosition(str(row[0]), int(row[1]))
                break
        return is_mariadb, end

    # ----- the reader -----
    def _ensure_reader(self) -> bool:
        """Start reading if this process holds (or gets) the queue's reader lock; False on standby."""
        if self._pid != os.getpid():  # forked: the parent's reader, buffer and lock are not ours
            self.__init__(self.queue_name, self.options)  # type: ignore[misc]
        store = self._checkpoints()
        if self._fatal is not None:
            # report it once per fetch attempt and start over on the next one (the engine backs off):
            # a fixed grant or setting then takes effect without restarting the consumer
            fatal, self._fatal = self._fatal, None
            self._stop_reader(drop=True)
            store.release_reader(self.consumer_id)
            raise fatal
        now = time.monotonic()
        ttl = self.options.reader_lock_ttl
        if self._holding_lock:
            if now - self._lock_renewed_at >= ttl / 3:
                if store.acquire_reader(self.consumer_id, ttl):
                    self._lock_renewed_at = now
                else:
                    log.warning("mysql_cdc %s: reader lock lost; stopping the reader", self.queue_name)
                    self._stop_reader(drop=True)
                    return False
            return True
        if not store.acquire_reader(self.consumer_id, ttl):
            if not self._standby_logged:
                log.info("mysql_cdc %s: another process reads this queue's binlog; standing by", self.queue_name)
                self._standby_logged = True
            return False
        self._holding_lock, self._lock_renewed_at = True, now
        try:
            self._start_reader()
        except BaseException:
            self._stop_reader(drop=True)
            self._fatal = None  # raised now; the next fetch starts over
            store.release_reader(self.consumer_id)
            raise
        return True

    def _start_reader(self) -> None:
        with self._lock:
            if self._reader is not None or self._closed:
                return
            self.dead_letter_target()  # a bad dead-letter setting fails now, not at the first reject
            conn = self._control_connection()
            try:
                is_mariadb, end = self._check_server(conn)
            finally:
                conn.close()
            opts = self.options
            resume = self._checkpoints().load()
            gtid: Optional[str] = None
            if resume is None:
                if opts.start == "position":
                    resume = RowPosition(str(opts.start_log_file), int(opts.start_log_pos or 4))
                elif opts.start == "gtid":
                    gtid = opts.start_gtid_set
                else:
                    if end is None:
                        raise MysqlCdcServerConfigError(
                            f"MYSQL_CDC: the server reports no binlog position (log_bin off?)")
                    resume = end
                if resume is not None:
                    self._save_checkpoint(resume)  # a crash before the first row resumes here, not later
            self._saved = resume
            flavor_mariadb = is_mariadb if opts.flavor == "auto" else opts.flavor == "mariadb"
            self._stop.clear()
            self._connected.clear()
            self._fatal = None
            self._reader = threading.Thread(target=self._read_loop, args=(resume, gtid, flavor_mariadb),
                                            name=f"funboost-mysql-cdc-{self.queue_name}", daemon=True)
            self._reader.start()
        # report a refused replication connection (grants, purged binlog) to the caller right away
        self._connected.wait(opts.connect_timeout)
        if self._fatal is not None:
            raise self._fatal

    def _open_stream(self, resume: Optional[RowPosition], gtid: Optional[str],
                     is_mariadb: bool) -> BinLogStreamReader:
        opts = self.options
        settings = dict(opts.connection_settings())
        # a half-open connection shows up as a read timeout (the server sends heartbeats when idle)
        settings["read_timeout"] = max(opts.heartbeat_seconds * 3, 5.0)
        only_tables = sorted({t.rpartition(".")[2] for t in opts.tables}) or None
        ignored_tables = sorted(t for t in opts.exclude_tables if "." not in t) or None
        kw: dict[str, Any] = dict(
            connection_settings=settings, server_id=opts.server_id_for(self.queue_name), blocking=True,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, RotateEvent],
            only_schemas=opts.schemas or None, ignored_schemas=opts.exclude_schemas or None,
            only_tables=only_tables, ignored_tables=ignored_tables, slave_heartbeat=opts.heartbeat_seconds,
            enable_logging=False)
        if resume is not None:
            kw.update(resume_stream=True, log_file=resume.log_file, log_pos=resume.txn_pos)
        else:
            kw.update(auto_position=gtid, is_mariadb=is_mariadb)
        return BinLogStreamReader(**kw)

    def _table_wanted(self, schema: str, table: str) -> bool:
        opts = self.options
        full = f"{schema}.{table}"
        if opts.tables and table not in opts.tables and full not in opts.tables:
            return False
        return not (table in opts.exclude_tables or full in opts.exclude_tables)

    def _read_loop(self, resume: Optional[RowPosition], gtid: Optional[str], is_mariadb: bool) -> None:
        opts = self.options
        backoff = opts.reconnect_backoff_initial
        # rows up to this one (same file) were handed out already: skipped when streaming again
        skip_upto: Optional[RowPosition] = resume if resume is not None and resume.row >= 0 else None
        boundary = resume
        watched = opts.watched_events()
        while not self._stop.is_set():
            stream = None
            try:
                stream = self._stream = self._open_stream(boundary, gtid, is_mariadb)
                while not self._stop.is_set():
                    ev = stream.fetchone()
                    if ev is None:  # the server ended the dump
                        raise ConnectionError("binlog stream ended")
                    if not self._connected.is_set():
                        self._connected.set()
                    backoff = opts.reconnect_backoff_initial
                    if isinstance(ev, (XidEvent, RotateEvent)) or (
                            isinstance(ev, QueryEvent) and ev.query.strip().upper() != "BEGIN"):
                        # a transaction boundary (commit, DDL, next file): a later resume may start here
                        boundary = RowPosition(stream.log_file, stream.log_pos)
                        gtid = None
                        if self._unannounced:
                            self._wake_fetcher()
                        continue
                    kind = _EVENT_KIND.get(type(ev))
                    if kind is None or kind not in watched or not self._table_wanted(ev.schema, ev.table):
                        continue
                    if boundary is None:
                        raise MysqlCdcError("a row event before any transaction boundary")
                    self._emit(ev, kind, stream.log_file, boundary.txn_pos, stream.log_pos, skip_upto)
                    skip_upto = None if skip_upto is None or skip_upto.log_file != stream.log_file else skip_upto
            except MysqlCdcServerConfigError as e:
                self._fatal = e
                self._connected.set()
                log.error("%s", e)
                return
            except Exception as e:
                if self._stop.is_set():
                    return
                try:
                    self._raise_if_fatal(e, "reading the binlog")
                except MysqlCdcServerConfigError as fatal:
                    self._fatal = fatal
                    self._connected.set()
                    log.error("%s", fatal)
                    return
                log.warning("mysql_cdc %s: binlog connection failed (%s: %s); reconnecting in %.1fs",
                            self.queue_name, type(e).__name__, e, backoff)
            finally:
                if stream is not None:
                    try:
                        stream.close()
                    except Exception:
                        pass
                self._stream = None
            # stream again from the current transaction's start, skipping the rows already read
            last = self._last_read
            if last is not None and boundary is not None and last.txn_pos == boundary.txn_pos \
                    and last.log_file == boundary.log_file:
                skip_upto = last
            self._stop.wait(backoff)
            backoff = min(backoff * 2, opts.reconnect_backoff_max)

    _last_read: Optional[RowPosition] = None

    def _emit(self, ev: Any, kind: str, log_file: str, txn_pos: int, event_pos: int,
              skip_upto: Optional[RowPosition]) -> None:
        columns = getattr(ev, "columns", None) or []
        if any(getattr(c, "name", None) is None for c in columns):
            raise MysqlCdcServerConfigError(
                f"MYSQL_CDC: the row event of {ev.schema}.{ev.table} at {log_file}:{event_pos} carries no "
                f"column names: the server wrote it with binlog_row_metadata other than FULL. Set "
                f"binlog_row_metadata=FULL (and start after that point)")
        rows = ev.rows
        ts = ev.timestamp
        first = 0
        if skip_upto is not None and skip_upto.log_file == log_file and skip_upto.event_pos >= event_pos:
            first = len(rows) if skip_upto.event_pos > event_pos else skip_upto.row + 1
        if first >= len(rows):
            return
        schema, table = ev.schema, ev.table
        out: list[Delivery] = []
        seqs: list[int] = []
        seq = self._next_seq
        # one envelope per event; each row copies it with its own arguments and task id
        base_extra = build_envelope({}, task_id="-")["extra"]
        for i in range(first, len(rows)):
            row = rows[i]
            task_id = f"{log_file}:{event_pos}:{i}"
            kwargs: dict[str, Any] = {"schema": schema, "table": table, "event": kind}
            if kind == "update":
                kwargs["before"] = _row_values(row["before_values"])
                kwargs["after"] = _row_values(row["after_values"])
            else:
                kwargs["values"] = _row_values(row["values"])
            kwargs["binlog"] = {"file": log_file, "pos": event_pos, "row": i}
            kwargs["timestamp"] = ts
            pos = RowPosition(log_file, txn_pos, event_pos, i)
            self._positions[seq] = (pos, task_id)
            self._seq_by_task[task_id] = seq
            kwargs["extra"] = {**base_extra, "task_id": task_id}
            out.append(Delivery(body=dumps(kwargs), tag=seq))
            seqs.append(seq)
            seq += 1
        self._next_seq = seq
        self._tracker.add_many(seqs)
        self._last_read = RowPosition(log_file, txn_pos, event_pos, len(rows) - 1)
        with self._cond:
            while len(self._buffer) >= self.options.buffer_rows and not self._stop.is_set():
                self._cond.wait(0.5)  # backpressure: the engine has not taken what was read
            self._buffer.extend(out)
            # Wake the fetcher per batch of rows, and at the transaction's end (the commit event
            # follows its rows at once): waking it per rows event (often one row) costs a thread
            # switch per row.
            self._unannounced += len(out)
            if self._unannounced >= _WAKE_BATCH:
                self._unannounced = 0
                self._cond.notify_all()

    def _wake_fetcher(self) -> None:
        with self._cond:
            self._unannounced = 0
            self._cond.notify_all()

    def _stop_reader(self, drop: bool) -> None:
        with self._lock:
            self._stop.set()
            stream, reader = self._stream, self._reader
            if stream is not None:
                # wake the reader's blocking socket read (closing the socket from another thread
                # does not); the reader closes the stream itself
                sock = getattr(getattr(stream, "_stream_connection", None), "_sock", None)
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._cond:
                self._cond.notify_all()
            if reader is not None and reader is not threading.current_thread():
                reader.join(timeout=10)
            self._reader = None
            if drop:  # forget everything not checkpointed: the next reader starts at the checkpoint
                with self._cond:
                    self._buffer.clear()
                self._tracker = ContiguousTracker()
                self._positions.clear()
                self._seq_by_task.clear()
                self._acks_to_ignore.clear()
                self._last_read = None
                self._holding_lock = False

    # ----- data path -----
    def run_consumer(self, consumer: Any) -> bool:
        """Fix the start position before ``consume()`` returns: a queue without a checkpoint starts at the
        binlog's end as of its first reader, so rows written right after ``consume()`` must come after
        that point (waiting for the first fetch lost them). A server that cannot be read yet is only
        logged here: the fetch loop retries and reports it. The engine's fetch loop does the rest."""
        try:
            self._ensure_reader()
        except Exception as exc:
            log.warning("mysql_cdc %s: cannot start reading the binlog yet (%s: %s); the consumer retries",
                        self.queue_name, type(exc).__name__, exc)
        return False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed:
            return []
        if not self._ensure_reader():
            self._stop.wait(min(max(timeout, 0.0), 1.0))
            return []
        if max_count <= 0:
            return []
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._buffer:
                if self._fatal is not None:
                    break  # raised (and reset) by the next _ensure_reader
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return []
                self._cond.wait(left)
            n = min(max_count, len(self._buffer))
            out = [self._buffer.popleft() for _ in range(n)]
            self._cond.notify_all()
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        finished = []
        with self._cond:
            for d in deliveries:
                seq = d.tag
                pending = self._acks_to_ignore.get(seq)
                if pending:  # the original of a re-published row: its copy settles it
                    if pending == 1:
                        del self._acks_to_ignore[seq]
                    else:
                        self._acks_to_ignore[seq] = pending - 1
                    continue
                finished.append(seq)
        self._tracker.done_many(finished)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the position of the last row below which every row is finished."""
        safe = self._tracker.safe_offset()
        if safe is None or safe <= self._pruned_below:
            return
        last_done = safe - 1
        entry = self._positions.get(last_done)
        if entry is None:
            return
        self._save_checkpoint(entry[0])
        with self._ckpt_lock:  # forget finished rows, keeping the last one (the checkpoint's)
            for seq in range(self._pruned_below, last_done):
                e = self._positions.pop(seq, None)
                if e is not None:
                    self._seq_by_task.pop(e[1], None)
            self._pruned_below = max(self._pruned_below, last_done)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._cond:
            for d in reversed(list(deliveries)):
                self._buffer.appendleft(Delivery(body=d.body, tag=d.tag, redelivered=True))
            self._cond.notify_all()

    def dead_letter_target(self) -> tuple[type[Broker], Any]:
        """``<queue>_dlx`` of ``dead_letter_kind``: the binlog cannot take the rejected row back."""
        try:
            cls = resolve_broker_kind(self.options.dead_letter_kind)
            return cls, cls.parse_options(self.options.dead_letter_options)
        except Exception as e:
            raise MysqlCdcError(f"MYSQL_CDC queue {self.queue_name!r}: dead_letter_kind="
                                f"{self.options.dead_letter_kind!r} / dead_letter_options: {e}") from e

    def queue_size(self) -> QueueSize:
        # the binlog ahead of the reader is not counted in rows (it would mean decoding it)
        return QueueSize(ready=None)

    def purge(self) -> int:
        """Skip every change not finished yet: the checkpoint moves to the binlog's current end and the
        reader (if this process runs it) restarts there. The number of skipped rows is unknown (-1)."""
        conn = self._control_connection()
        try:
            _, end = self._check_server(conn)
        finally:
            conn.close()
        if end is None:
            raise MysqlCdcError("the server reports no binlog position")
        running = self._reader is not None
        if running:
            self._stop_reader(drop=True)
        with self._ckpt_lock:
            self._checkpoints().save(end)
            self._saved = end
        if running:
            self._ensure_reader()
        return -1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._checkpoint()
            self._stop_reader(drop=True)
        if self._store is not None:
            try:
                self._store.release_reader(self.consumer_id)
            except Exception:
                pass
        with self._cond:
            self._cond.notify_all()
        super().close()
