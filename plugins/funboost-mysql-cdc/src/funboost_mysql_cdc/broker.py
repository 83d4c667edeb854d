"""The ``MYSQL_CDC`` broker kind: every row inserted, updated or deleted in the watched tables of a MySQL
/ MariaDB server becomes one message (read from the binlog with mysql-replication).

How at-least-once works
-----------------------
A reader decodes row events into a bounded buffer (in a child process by default, see
:mod:`funboost_mysql_cdc.reader_process`); each row gets a local sequence number and its
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

import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from typing import Any, Optional, Sequence

import pymysql
from pydantic import BaseModel
from pymysqlreplication import BinLogStreamReader

from funboost.contiguous import ContiguousTracker
from funboost.engine.liveness import pid_gone
from funboost.keepalive import shutdown_requested
from funboost.plugins.broker import (
    Broker, Capabilities, Delivery, OutgoingMessage, QueueSize,
)
from funboost.plugins.manager import resolve_broker_kind
from funboost.state.base import StateBackend, get_state_backend

from .binlog import RowPosition, fatal_error, read_binlog, task_id_of
from .errors import MysqlCdcError, MysqlCdcPublishError, MysqlCdcServerConfigError
from .options import MysqlCdcOptions
from .reader_process import relay, start_child

log = logging.getLogger("funboost.mysql_cdc")

# rows buffered before the waiting fetcher is woken (it is also woken at every transaction's end)
_WAKE_BATCH = 256


# at most this often (s), a transaction boundary read while no row is unfinished becomes the checkpoint
_IDLE_CHECKPOINT_EVERY = 1.0


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
        self._stream: Optional[BinLogStreamReader] = None  # reader="thread": the open stream
        self._child: Optional[subprocess.Popen] = None  # reader="process": the running reader process
        self._lock_child = threading.Lock()
        self._last_read: Optional[RowPosition] = None  # the last row handed to the buffer
        self._boundary: Optional[RowPosition] = None  # the last transaction boundary read
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._fatal: Optional[BaseException] = None
        self._holding_lock = False
        self._lock_renewed_at = 0.0
        self._idle_saved_at = 0.0
        self._idle_boundary: Optional[RowPosition] = None
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
    def check_accepts_new_messages(self) -> None:
        raise MysqlCdcPublishError(
            f"queue {self.queue_name!r} is a MYSQL_CDC queue: its messages are the row changes of "
            f"the binlog, push()/publish() are not applicable (write to the watched tables instead)")

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        copies = []
        for m in messages:
            seq = self._seq_by_task.get(m.task_id) if m.task_id else None
            if seq is None:
                self.check_accepts_new_messages()
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
        fatal = fatal_error(exc, doing, self.options, self.queue_name)
        if fatal is not None:
            raise fatal

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
                            "MYSQL_CDC: the server reports no binlog position (log_bin off?)")
                    resume = end
                if resume is not None:
                    self._save_checkpoint(resume)  # a crash before the first row resumes here, not later
            self._saved = resume
            flavor_mariadb = is_mariadb if opts.flavor == "auto" else opts.flavor == "mariadb"
            self._stop.clear()
            self._connected.clear()
            self._fatal = None
            target = self._relay_child if opts.reader == "process" else self._read_in_thread
            self._reader = threading.Thread(target=target, args=(resume, gtid, flavor_mariadb),
                                            name=f"funboost-mysql-cdc-{self.queue_name}", daemon=True)
            self._reader.start()
        # report a refused replication connection (grants, purged binlog) to the caller right away
        self._connected.wait(opts.connect_timeout)
        if self._fatal is not None:
            raise self._fatal

    # ----- reading: read_binlog (funboost_mysql_cdc.binlog) reports here, from this process's reader
    # thread (reader="thread") or relayed from the reader process (reader="process", the default)
    def _read_in_thread(self, resume: Optional[RowPosition], gtid: Optional[str], is_mariadb: bool) -> None:
        def on_stream(stream: Optional[BinLogStreamReader]) -> None:
            self._stream = stream
        read_binlog(self.options, self.queue_name, resume, gtid, is_mariadb, self, self._stop, on_stream)

    def _relay_child(self, resume: Optional[RowPosition], gtid: Optional[str], is_mariadb: bool) -> None:
        """Run reader processes one after another until stopped: one that ends unexpectedly is replaced,
        streaming from the current transaction's start and skipping the rows this process has."""
        opts = self.options
        options_json = opts.model_dump(mode="json")
        backoff = opts.reconnect_backoff_initial
        self._last_read, self._boundary = None, resume
        while not self._stopping():
            try:
                proc = start_child(options_json, self.queue_name, resume, gtid, is_mariadb)
            except Exception as e:
                self.warning(f"mysql_cdc {self.queue_name}: cannot start the reader process "
                             f"({type(e).__name__}: {e}); retrying in {backoff:.1f}s")
            else:
                with self._lock_child:
                    self._child = proc
                try:
                    assert proc.stdout is not None
                    if relay(proc.stdout, self):
                        return  # fatal: reported to the fetcher
                finally:
                    with self._lock_child:
                        self._child = None
                    proc.kill()
                    proc.wait()
                    for pipe in (proc.stdin, proc.stdout):
                        try:
                            pipe.close()  # type: ignore[union-attr]
                        except OSError:
                            pass
                if self._stopping():  # ended because of the stop (or during it): no new reader
                    return
                self.warning(f"mysql_cdc {self.queue_name}: the reader process ended (exit code "
                             f"{proc.returncode}); starting another in {backoff:.1f}s")
            # the next reader streams from the current transaction's start, skipping the rows this
            # process already has (or from the GTID set when no transaction ended yet)
            last, boundary = self._last_read, self._boundary
            if boundary is not None:
                gtid = None
                resume = last if last is not None and last.txn_pos == boundary.txn_pos \
                    and last.log_file == boundary.log_file else boundary
            self._stop.wait(backoff)
            backoff = min(backoff * 2, opts.reconnect_backoff_max)

    def _stopping(self) -> bool:
        """The reader was stopped, or this process is shutting down (SIGINT / SIGTERM: the engine's graceful
        stop closes this broker soon): no reader process is started any more."""
        return self._stop.is_set() or shutdown_requested()

    # BinlogSink, called by the reading thread
    def connected(self) -> None:
        if not self._connected.is_set():
            self._connected.set()

    def boundary(self, pos: RowPosition) -> None:
        self._boundary = pos
        if self._unannounced:
            self._wake_fetcher()
        # Every row handed out has finished (or none was): this boundary is a valid checkpoint. Saving it
        # keeps a queue whose watched tables are quiet while others change from holding a checkpoint in a
        # binlog file the server purges later (a restart could not resume) or re-reading that history.
        safe = self._tracker.safe_offset()
        if (safe is None or safe >= self._next_seq) and not self._acks_to_ignore:
            self._idle_boundary = pos
            self._save_idle_boundary()

    def _save_idle_boundary(self) -> None:
        """Write the last boundary recorded with no row unfinished, at most once per
        ``_IDLE_CHECKPOINT_EVERY`` seconds (the fetch loop writes the last one once reading went quiet)."""
        pos = self._idle_boundary
        if pos is None or time.monotonic() - self._idle_saved_at < _IDLE_CHECKPOINT_EVERY:
            return
        self._idle_saved_at = time.monotonic()
        self._idle_boundary = None
        try:
            self._save_checkpoint(pos)
        except Exception as e:  # a later boundary tries again
            log.warning("mysql_cdc %s: cannot save the checkpoint (%s: %s)", self.queue_name, type(e).__name__, e)

    def fatal(self, error: MysqlCdcServerConfigError) -> None:
        self._fatal = error
        self._connected.set()
        log.error("%s", error)

    def warning(self, message: str) -> None:
        log.warning("%s", message)

    def rows(self, log_file: str, txn_pos: int, event_pos: int, first: int, bodies: list) -> None:
        out: list[Delivery] = []
        seqs: list[int] = []
        seq = self._next_seq
        positions, seq_by_task = self._positions, self._seq_by_task
        for i, body in enumerate(bodies, first):
            task_id = task_id_of(log_file, event_pos, i)
            positions[seq] = (RowPosition(log_file, txn_pos, event_pos, i), task_id)
            seq_by_task[task_id] = seq
            out.append(Delivery(body=body, tag=seq))
            seqs.append(seq)
            seq += 1
        self._next_seq = seq
        self._tracker.add_many(seqs)
        self._last_read = RowPosition(log_file, txn_pos, event_pos, first + len(bodies) - 1)
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
            with self._lock_child:
                child = self._child
            if child is not None:
                child.kill()  # it holds nothing worth saving; the relay sees its output end
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
                self._last_read = self._boundary = self._idle_boundary = None
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
        if self._idle_boundary is not None:
            self._save_idle_boundary()
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
