"""The binlog reader in a child process (the default, ``reader="process"``).

Decoding row events is the heaviest part of CDC: mysql-replication parses each row in pure Python (about
110 µs a row on a 2 GHz core), more than the engine spends on running it. In the consumer's own process
that work and the engine's share one GIL; in a child it runs on another core. The child runs
:func:`funboost_mysql_cdc.binlog.read_binlog` and writes what it reports to its stdout; the parent keeps
everything that matters for delivery (sequence numbers, the buffer, the checkpoint), so the child holds no
state worth saving and is simply killed when reading stops.

The wire between them: the child reads one JSON line (its options, queue, start) from stdin, then writes
lines to stdout (binary; JSON bodies never hold a raw newline)::

    C                                                   connected
    B <file> <pos>                                      a transaction boundary
    R <file> <txn_pos> <event_pos> <first> <count>      then <count> lines, one message body each
    F <json text>                                       fatal (the reader stopped for good)
    W <json text>                                       a warning to log

(fields separated by tabs). The child exits when its stdin closes, so a parent killed with ``kill -9``
does not leave it behind, or when the parent kills it. It is started in a session of its own and ignores
SIGINT and SIGTERM: Ctrl-C, or a SIGTERM to the whole process group (``docker stop``, systemd), is the
parent's to handle (a graceful stop, which then ends the child); the child does not die in the middle of
it with a KeyboardInterrupt traceback, and once the process is shutting down no reader is started again.
Nothing but these lines is ever written to the protocol pipe: the child points its file descriptor 1 at
stderr before importing anything that might print.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Optional

from .binlog import BinlogSink, RowPosition
from .errors import MysqlCdcServerConfigError

log = logging.getLogger("funboost.mysql_cdc")

#: rows a child holds before it writes them without waiting for its linger (also bounds its memory)
_MAX_PENDING_ROWS = 1024
#: how long a child lets rows of one burst gather into one write
_LINGER_SECONDS = 0.001


class ChildProcessError(RuntimeError):
    """The reader process could not be started or ended unexpectedly."""


def start_child(options_json: dict, queue_name: str, resume: Optional[RowPosition], gtid: Optional[str],
                is_mariadb: bool) -> subprocess.Popen:
    """Start a reader process streaming from ``resume`` (or ``gtid``)."""
    if not sys.executable:
        raise ChildProcessError("sys.executable is empty: no interpreter to start the reader process with "
                                "(use broker_exclusive_config={'reader': 'thread'})")
    # a session of its own: the terminal's Ctrl-C (SIGINT to the foreground process group) and a SIGTERM to
    # the parent's group do not reach it; the parent stops it (kill, or its stdin closing)
    proc = subprocess.Popen([sys.executable, "-m", "funboost_mysql_cdc.reader_process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True, start_new_session=(os.name == "posix"))
    assert proc.stdin is not None
    config = {"options": options_json, "queue": queue_name, "resume": resume.as_dict() if resume else None,
              "gtid": gtid, "is_mariadb": is_mariadb}
    try:
        proc.stdin.write(json.dumps(config).encode("utf-8") + b"\n")
        proc.stdin.flush()
    except OSError as e:
        proc.kill()
        proc.wait()
        raise ChildProcessError(f"the reader process did not start: {e}") from e
    return proc  # stdin stays open: the child exits when it closes (this process ended)


def relay(out: IO[bytes], sink: BinlogSink) -> bool:
    """In the parent: read the child's lines and report them to ``sink`` until the child's output ends.
    True if it ended after a fatal error (no point in starting another child)."""
    readline = out.readline
    while True:
        line = readline()
        if not line.endswith(b"\n"):  # the end, or cut short by the child's death: the next child reads on
            return False
        tag = line[:1]
        if tag == b"R":
            _, f, txn_pos, event_pos, first, count = line[:-1].split(b"\t")
            lines = [readline() for _ in range(int(count))]
            if lines and not lines[-1].endswith(b"\n"):
                return False
            bodies = [b[:-1] for b in lines]
            sink.rows(f.decode("utf-8"), int(txn_pos), int(event_pos), int(first), bodies)  # type: ignore[arg-type]
        elif tag == b"B":
            _, f, pos = line[:-1].split(b"\t")
            sink.boundary(RowPosition(f.decode("utf-8"), int(pos)))
        elif tag == b"C":
            sink.connected()
        elif tag == b"F":
            sink.fatal(MysqlCdcServerConfigError(json.loads(line[2:])))
            return True
        elif tag == b"W":
            sink.warning(json.loads(line[2:]))
        else:
            log.error("mysql_cdc: unexpected line from the reader process: %r", line[:200])


class _PipeSink:
    """In the child: what :func:`read_binlog` reports, written to the parent in few large writes. A row
    burst waits at most ``_LINGER_SECONDS`` (a flusher thread writes it), or is written at once past
    ``_MAX_PENDING_ROWS``; a write blocks while the parent does not read (its buffer is full), and so
    does the reading: backpressure reaches the binlog connection."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.cond = threading.Condition()
        self.parts: list[bytes] = []
        self.pending_rows = 0
        threading.Thread(target=self._flusher, name="funboost-mysql-cdc-flusher", daemon=True).start()

    def _flush_locked(self) -> None:
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.pending_rows = 0
            self.out.write(data)
            self.out.flush()

    def _put(self, data: bytes, rows: int = 0, urgent: bool = False) -> None:
        with self.cond:
            self.parts.append(data)
            self.pending_rows += rows
            if urgent or self.pending_rows >= _MAX_PENDING_ROWS:
                self._flush_locked()
            else:
                self.cond.notify()

    def _flusher(self) -> None:
        while True:
            with self.cond:
                while not self.parts:
                    self.cond.wait()
            time.sleep(_LINGER_SECONDS)
            with self.cond:
                self._flush_locked()

    def connected(self) -> None:
        self._put(b"C\n", urgent=True)

    def boundary(self, pos: RowPosition) -> None:
        self._put(f"B\t{pos.log_file}\t{pos.txn_pos}\n".encode("utf-8"))

    def rows(self, log_file: str, txn_pos: int, event_pos: int, first: int, bodies: list[str]) -> None:
        head = f"R\t{log_file}\t{txn_pos}\t{event_pos}\t{first}\t{len(bodies)}\n"
        self._put((head + "\n".join(bodies) + "\n").encode("utf-8"), rows=len(bodies))

    def fatal(self, error: MysqlCdcServerConfigError) -> None:
        self._put(b"F\t" + json.dumps(str(error)).encode("utf-8") + b"\n", urgent=True)

    def warning(self, message: str) -> None:
        self._put(b"W\t" + json.dumps(message).encode("utf-8") + b"\n", urgent=True)


def _exit_when_parent_goes(stdin: IO[bytes]) -> None:
    try:
        while stdin.read(65536):
            pass
    finally:
        os._exit(0)


def ignore_stop_signals() -> None:
    """SIGINT / SIGTERM sent to the child itself (a signal to every process of a service) are ignored: it
    ends when the parent kills it or its stdin closes (the parent ended)."""
    for name in ("SIGINT", "SIGTERM"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):
                pass


def main() -> None:
    ignore_stop_signals()
    # the protocol gets its own descriptor; fd 1 (print, any library's stdout) goes to stderr
    proto = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    config: dict[str, Any] = json.loads(stdin.readline())
    threading.Thread(target=_exit_when_parent_goes, args=(stdin,), name="funboost-mysql-cdc-parent-watch",
                     daemon=True).start()
    from .binlog import read_binlog
    from .options import MysqlCdcOptions
    options = MysqlCdcOptions.model_validate(config["options"])
    resume = RowPosition.from_dict(config["resume"]) if config["resume"] else None
    sink = _PipeSink(proto)
    try:
        read_binlog(options, config["queue"], resume, config["gtid"], bool(config["is_mariadb"]), sink,
                    threading.Event())
    except BaseException as e:  # a bug: say it, then end (the parent starts another reader)
        sink.warning(f"mysql_cdc {config['queue']}: the reader process failed: {type(e).__name__}: {e}")
        raise
    finally:
        with sink.cond:
            sink._flush_locked()
    os._exit(0)


if __name__ == "__main__":
    main()
