"""Errors raised by the ``grpc`` broker kind on the client (publisher / ``sync_call``) side: core's
transport errors (:mod:`funboost.transport.errors`) under grpc names."""
from __future__ import annotations

from funboost.transport import errors as _t


class GrpcBrokerError(_t.TransportError):
    """A gRPC call failed for a reason that another consumer would not fix (bad token, bad request...).

    ``code`` is the ``grpc.StatusCode`` name (e.g. ``"UNAUTHENTICATED"``) when known."""


class NoConsumerAvailable(GrpcBrokerError, _t.NoConsumerAvailable):
    """No consumer at any address accepted the message in time (all down, full, or not hosting the queue)."""


class MessageTooLarge(GrpcBrokerError, _t.MessageTooLarge):
    """The envelope is larger than ``max_message_bytes``."""


class RemoteTaskError(_t.RemoteTaskError):
    """The function run by ``sync_call`` raised on the consumer. A :class:`funboost.RemoteTaskError`
    (``exception_type``, ``exception_msg``, ``data``) whose ``status`` is the whole remote status record
    (``FunctionResultStatus.to_dict()``)."""
