"""Errors raised by the ``http`` broker kind on the client (publisher / ``sync_call``) side: core's
transport errors (:mod:`funboost.transport.errors`) under http names. ``code`` is the HTTP status as text
(``"401"``, ``"400"`` …) or ``"UNAVAILABLE"`` when no consumer answered."""
from __future__ import annotations

from funboost.transport import errors as _t


class HttpBrokerError(_t.TransportError):
    """An HTTP request failed for a reason another consumer would not fix (bad token, bad request…)."""


class NoConsumerAvailable(HttpBrokerError, _t.NoConsumerAvailable):
    """No consumer at any address accepted the message in time (all down, full, or not hosting the queue)."""


class MessageTooLarge(HttpBrokerError, _t.MessageTooLarge):
    """The request body would be larger than ``max_message_bytes`` (the server answers 413)."""


class RemoteTaskError(_t.RemoteTaskError):
    """The function run by ``sync_call`` raised on the consumer (``exception_type``, ``exception_msg``,
    ``status`` = the remote status record)."""
