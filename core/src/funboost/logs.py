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
"""
from __future__ import annotations

import logging
import os
import threading
from logging.handlers import RotatingFileHandler

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(task_id)s] %(message)s"
ROOT_LOGGER_NAME = "funboost"


class TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            from funboost.context import _current_task
            ctx = _current_task.get()
            record.task_id = ctx.task_id if ctx is not None else "-"
        return True


class FallbackConsoleHandler(logging.StreamHandler):
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
        h.setFormatter(logging.Formatter(FORMAT))
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
            h.setFormatter(logging.Formatter(FORMAT))
            h.addFilter(TaskIdFilter())
            logger.addHandler(h)
    else:
        _no_console_loggers.add(logger.name)
    if params.create_logger_file or params.log_filename:
        from funboost.paths import user_data_dir
        path = params.log_filename or str(user_data_dir() / "logs" / f"funboost.{params.queue_name}.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fh = RotatingFileHandler(path, maxBytes=50 * 1024 * 1024, backupCount=5, encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        fh.addFilter(TaskIdFilter())
        logger.addHandler(fh)
    logger.propagate = True
