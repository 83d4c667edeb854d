"""Reading the binlog: row events in, message bodies and transaction boundaries out.

:func:`read_binlog` is the loop (connect, stream, reconnect with backoff, skip what was handed out
already); it reports to a :class:`BinlogSink`. It knows nothing of the engine, the buffer or the
checkpoint, so the broker can run it in a thread of its own process or, by default, in a child process
(:mod:`funboost_mysql_cdc.reader_process`): decoding row events is the heaviest part of CDC (~110 µs a row in
pure Python) and, in a child, it runs beside the engine instead of under the same GIL.
"""
from __future__ import annotations

import base64
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from funboost.message import build_envelope, dumps

from . import time2
from .errors import MysqlCdcError, MysqlCdcServerConfigError
from .options import MysqlCdcOptions

time2.install()  # negative TIME values with a fraction, decoded right (see time2.py)

EVENT_KIND = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
# server error codes that no retry fixes: access denied (1044/1045), missing privilege (1227),
# binlog position gone or unreadable (1236)
FATAL_SERVER_ERRORS = {1044: "access denied", 1045: "access denied", 1227: "missing privilege",
                       1236: "the binlog position cannot be read"}


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


def task_id_of(log_file: str, event_pos: int, row: int) -> str:
    """A row's task id: the same row gets the same id whenever it is read again."""
    return f"{log_file}:{event_pos}:{row}"


def _jsonable(value: Any) -> Any:
    """Column values JSON cannot hold as they are: bytes (UTF-8 text, else ``{"base64": ...}``) and TIME
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


def row_values(values: dict) -> dict:
    for v in values.values():
        if isinstance(v, _NEEDS_CONVERSION):
            return {k: _jsonable(v) for k, v in values.items()}
    return values  # the common case: nothing to convert (one pass, no copy)


def fatal_error(exc: BaseException, doing: str, options: MysqlCdcOptions,
                queue_name: str) -> Optional[MysqlCdcServerConfigError]:
    """The error to report when ``exc`` is one that no retry fixes (grants, purged binlog), else None."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code not in FATAL_SERVER_ERRORS:
        return None
    s = options.connection_settings()
    hint = ""
    if code in (1227, 1044):
        hint = (" The CDC user needs the REPLICATION SLAVE (MySQL 8: REPLICATION REPLICA) and "
                "REPLICATION CLIENT (MariaDB >= 10.5: BINLOG MONITOR) privileges, and SELECT on the "
                "watched tables; see docs/brokers/mysql-cdc.md.")
    elif code == 1236:
        hint = " The checkpoint's binlog file may have been purged (binlog_expire_logs_seconds)."
    err = MysqlCdcServerConfigError(
        f"MYSQL_CDC queue {queue_name!r}: {FATAL_SERVER_ERRORS[code]} while {doing} as "
        f"{s['user']!r}@{s['host']}:{s['port']}: {exc}.{hint}")
    err.__cause__ = exc
    return err


class BinlogSink(Protocol):
    """Where :func:`read_binlog` reports. Called from the reading thread only."""

    def connected(self) -> None:
        """The replication connection is up (called after each (re)connect)."""

    def boundary(self, pos: RowPosition) -> None:
        """A transaction ended (commit, DDL, next file): a resume may start at ``pos``."""

    def rows(self, log_file: str, txn_pos: int, event_pos: int, first: int, bodies: list[str]) -> None:
        """Rows ``first``, ``first + 1`` … of the rows event ending at ``event_pos``, as message bodies
        (JSON text). May block (backpressure)."""

    def fatal(self, error: MysqlCdcServerConfigError) -> None:
        """Reading stopped for good: the server's settings or the user's grants must change."""

    def warning(self, message: str) -> None:
        """Something to log (a dropped connection, a reconnect)."""


def open_stream(options: MysqlCdcOptions, queue_name: str, resume: Optional[RowPosition], gtid: Optional[str],
                is_mariadb: bool) -> BinLogStreamReader:
    settings = dict(options.connection_settings())
    # a half-open connection shows up as a read timeout (the server sends heartbeats when idle)
    settings["read_timeout"] = max(options.heartbeat_seconds * 3, 5.0)
    only_tables = sorted({t.rpartition(".")[2] for t in options.tables}) or None
    ignored_tables = sorted(t for t in options.exclude_tables if "." not in t) or None
    kw: dict[str, Any] = dict(
        connection_settings=settings, server_id=options.server_id_for(queue_name), blocking=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, RotateEvent],
        only_schemas=options.schemas or None, ignored_schemas=options.exclude_schemas or None,
        only_tables=only_tables, ignored_tables=ignored_tables, slave_heartbeat=options.heartbeat_seconds,
        enable_logging=False)
    if resume is not None:
        kw.update(resume_stream=True, log_file=resume.log_file, log_pos=resume.txn_pos)
    else:
        kw.update(auto_position=gtid, is_mariadb=is_mariadb)
    return BinLogStreamReader(**kw)


def _table_filter(options: MysqlCdcOptions) -> Callable[[str, str], bool]:
    tables, excluded = set(options.tables), set(options.exclude_tables)

    def wanted(schema: str, table: str) -> bool:
        full = f"{schema}.{table}"
        if tables and table not in tables and full not in tables:
            return False
        return not (table in excluded or full in excluded)
    return wanted


def _bodies(ev: Any, kind: str, log_file: str, event_pos: int, first: int) -> list[str]:
    """The message bodies of rows ``first`` … of a rows event: one envelope per event, each row copying it
    with its own arguments and task id."""
    columns = getattr(ev, "columns", None) or []
    if any(getattr(c, "name", None) is None for c in columns):
        raise MysqlCdcServerConfigError(
            f"MYSQL_CDC: the row event of {ev.schema}.{ev.table} at {log_file}:{event_pos} carries no "
            f"column names: the server wrote it with binlog_row_metadata other than FULL. Set "
            f"binlog_row_metadata=FULL (and start after that point)")
    rows = ev.rows
    ts = ev.timestamp
    schema, table = ev.schema, ev.table
    base_extra = build_envelope({}, task_id="-")["extra"]
    out = []
    for i in range(first, len(rows)):
        row = rows[i]
        kwargs: dict[str, Any] = {"schema": schema, "table": table, "event": kind}
        if kind == "update":
            kwargs["before"] = row_values(row["before_values"])
            kwargs["after"] = row_values(row["after_values"])
        else:
            kwargs["values"] = row_values(row["values"])
        kwargs["binlog"] = {"file": log_file, "pos": event_pos, "row": i}
        kwargs["timestamp"] = ts
        kwargs["extra"] = {**base_extra, "task_id": task_id_of(log_file, event_pos, i)}
        out.append(dumps(kwargs))
    return out


def read_binlog(options: MysqlCdcOptions, queue_name: str, resume: Optional[RowPosition], gtid: Optional[str],
                is_mariadb: bool, sink: BinlogSink, stop: threading.Event,
                on_stream: Callable[[Optional[BinLogStreamReader]], None] = lambda s: None) -> None:
    """Stream row changes from ``resume`` (or the GTID set ``gtid``) to ``sink`` until ``stop`` is set or a
    fatal error was reported. A dropped connection or a server restart reconnects with backoff and streams
    again from the current transaction's start, skipping the rows already reported. ``on_stream`` is told
    of each stream opened (and of None when it closed), so another thread can wake its blocking read."""
    backoff = options.reconnect_backoff_initial
    # rows up to this one (same file) were handed out already: skipped when streaming again
    skip_upto: Optional[RowPosition] = resume if resume is not None and resume.row >= 0 else None
    boundary = resume
    last_read: Optional[RowPosition] = None
    watched = options.watched_events()
    table_wanted = _table_filter(options)
    while not stop.is_set():
        stream = None
        try:
            stream = open_stream(options, queue_name, boundary, gtid, is_mariadb)
            on_stream(stream)
            announced = False
            while not stop.is_set():
                ev = stream.fetchone()
                if ev is None:  # the server ended the dump
                    raise ConnectionError("binlog stream ended")
                if not announced:
                    sink.connected()
                    announced = True
                backoff = options.reconnect_backoff_initial
                if isinstance(ev, (XidEvent, RotateEvent)) or (
                        isinstance(ev, QueryEvent) and ev.query.strip().upper() != "BEGIN"):
                    # a transaction boundary (commit, DDL, next file): a later resume may start here
                    boundary = RowPosition(stream.log_file, stream.log_pos)
                    gtid = None
                    sink.boundary(boundary)
                    continue
                kind = EVENT_KIND.get(type(ev))
                if kind is None or kind not in watched or not table_wanted(ev.schema, ev.table):
                    continue
                if boundary is None:
                    raise MysqlCdcError("a row event before any transaction boundary")
                log_file, event_pos = stream.log_file, stream.log_pos
                first = 0
                if skip_upto is not None and skip_upto.log_file == log_file and skip_upto.event_pos >= event_pos:
                    first = len(ev.rows) if skip_upto.event_pos > event_pos else skip_upto.row + 1
                n_rows = len(ev.rows)
                if first < n_rows:
                    sink.rows(log_file, boundary.txn_pos, event_pos, first, _bodies(ev, kind, log_file, event_pos, first))
                    last_read = RowPosition(log_file, boundary.txn_pos, event_pos, n_rows - 1)
                if skip_upto is not None and skip_upto.log_file != log_file:
                    skip_upto = None
        except MysqlCdcServerConfigError as e:
            sink.fatal(e)
            return
        except Exception as e:
            if stop.is_set():
                return
            fatal = fatal_error(e, "reading the binlog", options, queue_name)
            if fatal is not None:
                sink.fatal(fatal)
                return
            sink.warning(f"mysql_cdc {queue_name}: binlog connection failed ({type(e).__name__}: {e}); "
                         f"reconnecting in {backoff:.1f}s")
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception:
                    pass
                on_stream(None)
        # stream again from the current transaction's start, skipping the rows already read
        if last_read is not None and boundary is not None and last_read.txn_pos == boundary.txn_pos \
                and last_read.log_file == boundary.log_file:
            skip_upto = last_read
        stop.wait(backoff)
        backoff = min(backoff * 2, options.reconnect_backoff_max)
