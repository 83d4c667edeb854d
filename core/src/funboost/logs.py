"""Logging set-up: standard ``logging`` only. Each queue has its own logger (``funboost.<queue>``)
and every record carries ``task_id`` (``-`` outside a task). Console and file output are separate
switches (``log_to_console``, ``create_logger_file``/``log_filename``); ``FUNBOOST_LOG_TO_CONSOLE=0``
turns console output off globally."""
from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(task_id)s] %(message)s"


class TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            from funboost.context import _current_task
            ctx = _current_task.get()
            record.task_id = ctx.task_id if ctx is not None else "-"
        return True


def configure_queue_logger(logger: logging.Logger, params) -> None:
    if getattr(logger, "_funboost_configured", False):
        return
    logger._funboost_configured = True  # type: ignore[attr-defined]
    logger.addFilter(TaskIdFilter())
    fmt = logging.Formatter(FORMAT)
    console = params.log_to_console and os.environ.get("FUNBOOST_LOG_TO_CONSOLE", "1") != "0"
    if console:
        h = logging.StreamHandler()
        h.setFormatter(fmt)
        h.addFilter(TaskIdFilter())
        logger.addHandler(h)
    if params.create_logger_file or params.log_filename:
        from funboost.paths import user_data_dir
        path = params.log_filename or str(user_data_dir() / "logs" / f"funboost.{params.queue_name}.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fh = RotatingFileHandler(path, maxBytes=50 * 1024 * 1024, backupCount=5, encoding="utf-8")
        fh.setFormatter(fmt)
        fh.addFilter(TaskIdFilter())
        logger.addHandler(fh)
    logger.propagate = not (console or params.create_logger_file or params.log_filename)
