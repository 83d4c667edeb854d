"""Errors raised by the ``tcp`` broker kind on the client side: core's transport errors under tcp names.
``code`` is the error code of the server's error frame (``UNAUTHENTICATED``, ``BAD_REQUEST``…) or
``UNAVAILABLE`` when no consumer could be reached."""
from __future__ import annotations

from funboost.transport import errors as _t


class TcpBrokerError(_t.TransportError):
    """A tcp request failed for a reason that another consumer would not fix (bad token, bad request…)."""


class NoConsumerAvailable(TcpBrokerError, _t.NoConsumerAvailable):
    """No consumer at any address accepted the message in time (all down, full, or not hosting the queue)."""


class MessageTooLarge(TcpBrokerError, _t.MessageTooLarge):
    """The request is larger than ``max_frame_bytes``."""


class RemoteTaskError(_t.RemoteTaskError):
    """The function run by ``sync_call`` raised on the consumer (a :class:`funboost.RemoteTaskError`)."""
