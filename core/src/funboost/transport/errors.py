"""Errors of the server transports (grpc, tcp, http), shared so that every transport raises the same
kinds of errors; a transport subclasses them to add its name (``GrpcBrokerError`` …).

Two families:

* **user-facing** (:class:`TransportError` and subclasses): what ``push`` / ``sync_call`` raise.
* **one attempt against one endpoint failed** (:class:`AttemptFailed` and subclasses): what a transport's
  client framing raises from ``send_*`` so that :class:`~funboost.transport.client.TransportClient`
  decides about failover; they never reach the user.

And on the server side, :class:`RequestError` and subclasses: what
:class:`~funboost.transport.server.QueueServer`'s handlers raise; the framing turns each into its status
(a gRPC code, an HTTP status, an error frame).
"""
from __future__ import annotations

from typing import Any, Optional

from funboost.exceptions import FunboostError
from funboost.plugins.broker import BrokerUnavailable
from funboost.result import RemoteTaskError as CoreRemoteTaskError


# ---------------------------------------------------------------------- user-facing (client side)
class TransportError(FunboostError):
    """A transport call failed for a reason another consumer would not fix (bad token, bad request…).

    ``code`` is the transport's name of the failure when known (a gRPC status code name, an HTTP status)."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class NoConsumerAvailable(TransportError, BrokerUnavailable):
    """No consumer at any address accepted the message in time (all down, full, or not hosting the queue)."""


class MessageTooLarge(TransportError, ValueError):
    """The envelope is larger than the transport's maximum message size."""


class RemoteTaskError(CoreRemoteTaskError):
    """The function run by ``sync_call`` raised on the consumer. A :class:`funboost.RemoteTaskError`
    (``exception_type``, ``exception_msg``, ``data``) whose ``status`` is the remote status record."""

    code = "REMOTE_ERROR"

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(dict(status))
        self.status: dict[str, Any] = self.data
        if not self.exception_type:
            self.exception_type = "Exception"
        where = f" on {status['host']}:{status.get('pid')}" if status.get("host") else ""
        self.args = (f"{self.exception_type}: {self.exception_msg or ''} (task {status.get('task_id')}{where})",)


# ---------------------------------------------------------------------- one attempt (client framing)
class AttemptFailed(Exception):
    """One request to one endpoint failed; ``detail`` is shown in the final error ("addr: CODE: text")."""

    def __init__(self, detail: str, code: Optional[str] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class EndpointUnreachable(AttemptFailed):
    """The endpoint is down or the connection broke: mark it down and try another.

    ``maybe_processed``: the request may have reached the consumer before the failure (the connection
    broke mid-call). A ``sync_call`` is then not sent elsewhere (that could run the task twice)."""

    def __init__(self, detail: str, code: Optional[str] = None, maybe_processed: bool = False) -> None:
        super().__init__(detail, code)
        self.maybe_processed = maybe_processed


class EndpointRefused(AttemptFailed):
    """The consumer is up but did not take the request (its buffer is full, it does not host the queue):
    try another endpoint, later this one again."""


class AttemptTimedOut(AttemptFailed):
    """The attempt's deadline passed before a reply."""


# ---------------------------------------------------------------------- server side (handlers)
class RequestError(Exception):
    """A request a :class:`~funboost.transport.server.QueueServer` handler refuses; the framing answers
    with its own status for the subclass."""


class UnknownQueue(RequestError):
    """This consumer does not host the queue (gRPC NOT_FOUND, HTTP 404)."""


class Backpressure(RequestError):
    """The queue's buffer on this consumer is full: the client should try another consumer (gRPC
    RESOURCE_EXHAUSTED with a backpressure marker, HTTP 503/429)."""


class BadRequest(RequestError):
    """The body is not a funboost envelope (gRPC INVALID_ARGUMENT, HTTP 400)."""


class CallDeadlineExceeded(RequestError):
    """A call did not finish before its deadline (gRPC DEADLINE_EXCEEDED, HTTP 504)."""
