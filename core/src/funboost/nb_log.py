"""``funboost.nb_log``: the names of the original's logging library (nb_log) that user code calls, on the
standard :mod:`logging` module.

The original funboost exports the nb_log package as ``funboost.nb_log``. This project logs with the standard
library only: these helpers return ordinary :class:`logging.Logger` objects with funboost's console handler
(coloured on a terminal, ``path:line`` in each record, plain under ``NO_COLOR`` or when not a terminal)
and, when a file name is given, a size-rotating file that several processes may write safely.
nb_log's other options (its config file ``nb_log_config.py``, mail / Kafka / MongoDB handlers, print
patching) are not provided; they are accepted and ignored where they are keyword arguments.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from funboost.compat import get_logger, nb_print

__all__ = ["get_logger", "LogManager", "LoggerMixin", "LoggerMixinDefaultWithFileHandler", "LoggerLevelSetterMixin",
           "nb_print"]


class LogManager:
    """nb_log's ``LogManager(name).get_logger_and_add_handlers(...)``."""

    def __init__(self, logger_name: Optional[str] = None, **_ignored: Any) -> None:
        self.logger_name = logger_name

    def get_logger_and_add_handlers(self, log_level_int: int = logging.DEBUG, *, log_filename: Optional[str] = None,
                                    log_path: Optional[str] = None, log_file_size: int = 100,
                                    **_ignored: Any) -> logging.Logger:
        return get_logger(self.logger_name, log_level_int, log_filename=log_filename, log_path=log_path,
                          log_file_size=log_file_size)

    def get_logger_without_handlers(self) -> logging.Logger:
        return logging.getLogger(self.logger_name)


class LoggerMixin:
    """``self.logger``: a logger named after the class (console only)."""

    @property
    def logger(self) -> logging.Logger:
        return get_logger(type(self).__name__)


class LoggerMixinDefaultWithFileHandler:
    """``self.logger``: a logger named after the class, also writing ``<class name>.log``."""

    @property
    def logger(self) -> logging.Logger:
        name = type(self).__name__
        return get_logger(name, log_filename=f"{name}.log")


class LoggerLevelSetterMixin:
    """``set_log_level(level)`` on the class's logger; returns self, for chaining."""

    def set_log_level(self, log_level_int: int) -> "LoggerLevelSetterMixin":
        logging.getLogger(type(self).__name__).setLevel(log_level_int)
        return self
