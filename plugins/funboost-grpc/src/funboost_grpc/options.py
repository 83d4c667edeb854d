"""``broker_exclusive_config`` of the ``grpc`` kind. Every field also reads an environment variable
(``FUNBOOST_GRPC_<FIELD>``; the TLS paths ``FUNBOOST_GRPC_TLS_CERT``, ``_TLS_KEY``, ``_TLS_ROOT_CERT``; not the
timings and ``health_requires_token``), so connection settings never have to be written into the user's
project. The options every server transport has are in :class:`funboost.transport.options.TransportOptions`."""
from __future__ import annotations

from typing import ClassVar, Optional

from funboost.transport.options import DEFAULT_HOST, TransportOptions
from pydantic import Field

__all__ = ["GrpcOptions", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_MESSAGE_BYTES"]

DEFAULT_PORT = 50061
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class GrpcOptions(TransportOptions):
    """Options of the ``grpc`` broker kind (see docs/brokers/grpc.md).

    Server side (the consumer process): ``host``, ``port``, ``tls_cert_file``, ``tls_key_file``,
    ``buffer_size``, ``server_threads``. Client side (publishers, ``sync_call``): ``addresses``,
    ``tls_root_cert_file``, ``tls_server_name``, ``publish_timeout``, ``rpc_timeout``,
    ``health_check_interval`` (gRPC health protocol). Both: ``token``, ``max_message_bytes``.
    """

    env_prefix: ClassVar[str] = "FUNBOOST_GRPC_"
    env_names: ClassVar[dict[str, str]] = {"tls_cert_file": "FUNBOOST_GRPC_TLS_CERT",
                                           "tls_key_file": "FUNBOOST_GRPC_TLS_KEY",
                                           "tls_root_cert_file": "FUNBOOST_GRPC_TLS_ROOT_CERT"}
    env_skip: ClassVar[frozenset[str]] = frozenset({"publish_timeout", "rpc_timeout", "health_check_interval",
                                                    "health_requires_token"})

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # publisher: the CA (or self-signed certificate) to verify the consumer's certificate against
    tls_root_cert_file: Optional[str] = None
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    # each waiting sync_call holds one server thread: keep this above the consumer's concurrency
    server_threads: int = Field(64, ge=2)
    # deadline of one Publish attempt against one server
    rpc_timeout: float = Field(5.0, gt=0)
    # False lets unauthenticated health probes through (for load balancers that cannot send a token)
    health_requires_token: bool = True
