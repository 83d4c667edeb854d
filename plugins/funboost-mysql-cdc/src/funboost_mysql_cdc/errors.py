"""Errors of the ``MYSQL_CDC`` broker kind."""
from __future__ import annotations

from funboost.exceptions import PublishRefused


class MysqlCdcError(RuntimeError):
    """Base of this kind's errors."""


class MysqlCdcServerConfigError(MysqlCdcError):
    """The server (or the user's grants) cannot give what CDC needs; the message names the setting.
    Not retried: it needs a change on the server."""


class MysqlCdcPublishError(MysqlCdcError, PublishRefused):
    """``push`` / ``publish`` on a queue whose messages come from the binlog."""
