"""Errors raised by the ``grpc`` broker kind on the client (publisher / ``sync_call``) side."""
from __future__ import annotations

from typing import Any, Optional

from funboost.exceptions import FunboostError
from funboost.plugins.broker import BrokerUnavailable
from funboost.result import RemoteTaskError as CoreRemoteTaskError


class GrpcBrokerError(FunboostError):
    """A gRPC call failed for a reason that another consumer would not fix (bad token, bad request...).

    ``code`` is the ``grpc.StatusCode`` name (e.g. ``"UNAUTHENTICATED"``) when known."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class NoConsumerAvailable(GrpcBrokerError, BrokerUnavailable):
    """No consumer at any address accepted the message in time (all down, full, or not hosting the queue)."""


class MessageTooLarge(GrpcBrokerError, ValueError):
    """The envelope is larger than ``max_message_bytes``."""


class RemoteTaskError(CoreRemoteTaskError):
    """The function run by ``sync_call`` raised on the consumer. A :class:`funboost.RemoteTaskError`
    (``exception_type``, ``exception_msg``, ``data``) whose ``status`` is the whole remote status record
    (``FunctionResultStatus.to_dict()``)."""

    code = "REMOTE_ERROR"

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(dict(status))
        self.status: dict[str, Any] = self.data
        if not self.exception_type:
            self.exception_type = "Exception"
        where = f" on {status['host']}:{status.get('pid')}" if status.get("host") else ""
        self.args = (f"{self.exception_type}: {self.exception_msg or ''} (task {status.get('task_id')}{where})",)
