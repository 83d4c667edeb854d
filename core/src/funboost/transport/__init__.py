"""Transport primitives, free of any transport library.

What a server transport (grpc, tcp, http: the consumer serves, publishers connect to it) shares with the
others, so that each of them writes only its framing:

* :mod:`~funboost.transport.local_queue` – :class:`LocalQueue`, the in-process queue (ready, delayed,
  in-flight by delivery tag, capacity, waits with a deadline); the memory broker is built on it too;
* :mod:`~funboost.transport.calls` – :class:`PendingCall`, :class:`InlineRunner`, status encoding;
* :mod:`~funboost.transport.server` – :class:`QueueServer` (hosted queues and framing-free request
  handlers), :class:`ServerRegistry` (one server per host/port and process);
* :mod:`~funboost.transport.client` – :class:`TransportClient` (endpoints, failover, backoff, health probes);
* :mod:`~funboost.transport.broker` – :class:`ServingBroker`, the broker class on top of them;
* :mod:`~funboost.transport.errors` – the errors all of them raise;
* :mod:`~funboost.transport.options` – :class:`TransportOptions`, the base of their options models
  (environment defaults, address lists);
* :mod:`~funboost.transport.security` – loopback-unless-token binds, the constant-time token check.

See "Writing a server transport" in docs/writing-a-broker-plugin.md.
"""
from funboost.transport.broker import ServingBroker
from funboost.transport.calls import InlineRunner, PendingCall, decode_status, encode_status, result_of
from funboost.transport.client import Endpoint, TransportClient
from funboost.transport.errors import (AttemptFailed, AttemptTimedOut, Backpressure, BadRequest,
                                       CallDeadlineExceeded, EndpointRefused, EndpointUnreachable, MessageTooLarge,
                                       NoConsumerAvailable, RemoteTaskError, RequestError, TransportError,
                                       UnknownQueue)
from funboost.transport.local_queue import LocalQueue
from funboost.transport.security import InsecureBind, is_loopback_host, require_token_for_bind, token_matches
from funboost.transport.server import QueueServer, ServedQueue, ServerRegistry, parse_envelope

__all__ = [
    "LocalQueue", "PendingCall", "InlineRunner", "encode_status", "decode_status", "result_of",
    "QueueServer", "ServedQueue", "ServerRegistry", "parse_envelope", "Endpoint", "TransportClient",
    "ServingBroker", "TransportError", "NoConsumerAvailable", "MessageTooLarge", "RemoteTaskError",
    "AttemptFailed", "EndpointUnreachable", "EndpointRefused", "AttemptTimedOut", "RequestError", "UnknownQueue",
    "Backpressure", "BadRequest", "CallDeadlineExceeded",
    "InsecureBind", "is_loopback_host", "require_token_for_bind", "token_matches",
]
