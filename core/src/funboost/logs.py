"""Logging set-up: standard ``logging`` only, so funboost's records reach the handlers the application
configured (``logging.basicConfig``, Sentry, structlog, JSON handlers).

Logger names (all under ``funboost``; see docs/logging.md):

* ``funboost.<queue_name>`` (or ``logger_prefix`` + that, or ``logger_name``): one per queue: task runs,
  errors, retries, dead-letters, throughput lines; every record carries ``task_id`` (``-`` outside a task);
* ``funboost.engine``: executor internals; ``funboost.shutdown``: the graceful-shutdown line;
  ``funboost.plugins``: plugin loading; ``funboost.timing_job``: the scheduler; ``funboost.liveness``:
  the heartbeat ticker; ``funboost.<broker kind>`` (``funboost.redis``, ``funboost.sqlite``, ...): brokers.

Every funboost logger propagates. funboost's own console output is one handler on the ``funboost`` logger
that writes only while the root logger has no handler: with a configured root logger the line is printed
once, by the application's handlers; without one (a bare script) funboost still shows its lines. It is
turned off per queue by ``log_to_console=False`` or globally by ``FUNBOOST_LOG_TO_CONSOLE=0``. Files
(``create_logger_file`` / ``log_filename``) are extra handlers on the queue's logger.

Console lines name the code that logged as ``path:line`` (IDEs and terminals make it a link) and are
coloured by level when the stream is a terminal (plain when it is not, when ``NO_COLOR`` is set, or
``TERM=dumb``). The file handler (:class:`ProcessSafeRotatingFileHandler`) rotates by size and is safe when
several processes write the same file: each write and each rotation happen under an advisory lock on
``<file>.lock``, and a process notices that another one rotated, so no line is lost or overwritten.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from logging.handlers import RotatingFileHandler
from typing import Any, Callable, Optional

try:  # advisory file locks (POSIX); elsewhere the file handler is safe across threads only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(task_id)s] %(message)s"
# the console's: where the record was logged, as path:line (clickable in IDEs and most terminals)
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(location)s [%(task_id)s] %(message)s"
ROOT_LOGGER_NAME = "funboost"

# ANSI colours by level (SGR codes): debug dim, info green, warning yellow, error red, critical bold red
LEVEL_COLOURS = {logging.DEBUG: "2", logging.INFO: "32", logging.WARNING: "33", logging.ERROR: "31",
                 logging.CRITICAL: "1;31"}


def colour_wanted(stream: object) -> bool:
    """Colour for this stream: a terminal, and neither NO_COLOR (https://no-color.org) nor TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


class ConsoleFormatter(logging.Formatter):
    """:data:`CONSOLE_FORMAT`; ``location`` is the file relative to the current folder when it is inside
    it (shorter, and still a link relative to the project), else its absolute path."""

    def __init__(self, fmt: str = CONSOLE_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        path = record.pathname
        try:
            rel = os.path.relpath(path)
            if not rel.startswith(".."):
                path = rel
        except ValueError:  # another drive (Windows)
            pass
        record.location = f"{path}:{record.lineno}"
        return super().format(record)


class ColourStreamHandler(logging.StreamHandler):
    """A stream handler that colours each line by level when its stream is a terminal (see
    :func:`colour_wanted`; decided per stream, so a redirected stream is plain)."""

    _colour_for: "tuple[int, bool]" = (0, False)  # (id of the stream, colour it?)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        stream_id = id(self.stream)
        if self._colour_for[0] != stream_id:
            self._colour_for = (stream_id, colour_wanted(self.stream))
        if not self._colour_for[1]:
            return text
        code = LEVEL_COLOURS.get(record.levelno) or LEVEL_COLOURS[min(LEVEL_COLOURS, key=lambda lv: abs(lv - record.levelno))]
        return f"\033[{code}m{text}\033[0m"


class TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            from funboost.context import _current_task
            ctx = _current_task.get()
            record.task_id = ctx.task_id if ctx is not None else "-"
        return True


class FallbackConsoleHandler(ColourStreamHandler):
    """funboost's console output: writes a record only while the root logger has no handler (the
    application's handlers print it otherwise, through propagation), and never for a queue that turned
    console output off."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        if record.name in _no_console_loggers:
            return
        super().emit(record)


_no_console_loggers: set[str] = set()
_console_lock = threading.Lock()
_console_handler: "FallbackConsoleHandler | None" = None


def console_enabled() -> bool:
    return os.environ.get("FUNBOOST_LOG_TO_CONSOLE", "1") != "0"


def ensure_console_handler() -> None:
    """Add the fallback console handler to the ``funboost`` logger (once)."""
    global _console_handler
    with _console_lock:
        if _console_handler is not None:
            return
        h = FallbackConsoleHandler()
        h.setFormatter(ConsoleFormatter())
        h.addFilter(TaskIdFilter())
        logging.getLogger(ROOT_LOGGER_NAME).addHandler(h)
        _console_handler = h


def configure_queue_logger(logger: logging.Logger, params) -> None:
    if getattr(logger, "_funboost_configured", False):
        return
    logger._funboost_configured = True  # type: ignore[attr-defined]
    logger.addFilter(TaskIdFilter())
    if params.log_to_console and console_enabled():
        ensure_console_handler()
        if not logger.name.startswith(ROOT_LOGGER_NAME + ".") and logger.name != ROOT_LOGGER_NAME:
            # a custom logger_name outside the funboost tree: console output on its own logger (same rule)
            h = FallbackConsoleHandler()
            h.setFormatter(ConsoleFormatter())
            h.addFilter(TaskIdFilter())
            logger.addHandler(h)
    else:
        _no_console_loggers.add(logger.name)
        # "off" means off: with no handler anywhere, Python's last-resort handler would still print warnings
        # and errors to stderr, unformatted; the application's own handlers get the records as before
        logger.addHandler(logging.NullHandler())
    if params.create_logger_file or params.log_filename:
        from funboost.paths import user_data_dir
        path = params.log_filename or str(user_data_dir() / "logs" / f"funboost.{params.queue_name}.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fh = ProcessSafeRotatingFileHandler(path, maxBytes=50 * 1024 * 1024, backupCount=5, encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT + " (%(pathname)s:%(lineno)d)"))
        fh.addFilter(TaskIdFilter())
        logger.addHandler(fh)
    logger.propagate = True


class ProcessSafeRotatingFileHandler(RotatingFileHandler):
    """A size-rotating file handler that several processes may share: every write happens under an
    exclusive ``fcntl`` lock on ``<file>.lock`` after checking, by inode, that this process still has the
    current file open (another process may have rotated it), and the size check and the rotation happen
    under the same lock, on the file's real size. So every line lands in exactly one file and no rotation
    overwrites another's. ``backupCount`` files ``<file>.1`` ... are kept (0: the file is truncated by
    nobody and grows; as RotatingFileHandler, rotation needs ``maxBytes`` > 0 and ``backupCount`` > 0)."""

    def __init__(self, filename: str, mode: str = "a", maxBytes: int = 0, backupCount: int = 0,
                 encoding: Optional[str] = None, delay: bool = False, errors: Optional[str] = None) -> None:
        super().__init__(filename, "a", maxBytes, backupCount, encoding, delay=True, errors=errors)
        self._lock_path = self.baseFilename + ".lock"
        self._lock_fd: Optional[int] = None
        self._lock_pid = -1

    def _lock_file(self) -> Optional[int]:
        if fcntl is None:
            return None
        if self._lock_fd is None or self._lock_pid != os.getpid():  # a forked child opens its own
            self._lock_fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT, 0o644)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def _current(self) -> bool:
        """This process's stream is the file now at the path (not a rotated one)."""
        if self.stream is None:
            return False
        try:
            return os.fstat(self.stream.fileno()).st_ino == os.stat(self.baseFilename).st_ino
        except OSError:  # rotated away and not recreated yet
            return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record) + self.terminator
            fd = self._lock_file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                stream = self.stream
                if stream is None or not self._current():
                    if stream is not None:
                        stream.close()
                    stream = self.stream = self._open()
                if self.maxBytes > 0 and self.backupCount > 0:
                    size = os.fstat(stream.fileno()).st_size
                    if size > 0 and size + len(msg.encode(self.encoding or "utf-8", "replace")) > self.maxBytes:
                        stream.close()
                        self.rotate_files()
                        stream = self.stream = self._open()
                stream.write(msg)
                stream.flush()
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def rotate_files(self) -> None:
        """Shift ``<file>.N-1`` to ``<file>.N`` ... and the file to ``<file>.1`` (under the lock)."""
        for i in range(self.backupCount - 1, 0, -1):
            src, dst = f"{self.baseFilename}.{i}", f"{self.baseFilename}.{i + 1}"
            if os.path.exists(src):
                os.replace(src, dst)
        if os.path.exists(self.baseFilename):
            os.replace(self.baseFilename, self.baseFilename + ".1")

    def shouldRollover(self, record: Any) -> bool:  # rotation is decided in emit, under the lock
        return False

    def close(self) -> None:
        super().close()
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = None


class ThrottledLog:
    """A log line that may repeat many times a second (during a broker outage every commit or ack fails):
    logged at once the first time, then at most once per ``every`` seconds, and each line logged says how
    many were left out since the previous one. Thread-safe; one instance per kind of message."""

    def __init__(self, logger: logging.Logger, every: float = 10.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every = every
        self._level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")  # when the next line may be logged
        self._left_out = 0

    def __call__(self, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless a line was logged less than ``every`` seconds ago (then count it).
        True when logged."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._left_out += 1
                return False
            self._next = now + self._every
            left_out, self._left_out = self._left_out, 0
        if left_out:
            msg += " (and %d more like it since the previous line, not logged)"
            args = (*args, left_out)
        self._logger.log(self._level, msg, *args, stacklevel=2)
        return True
