"""``broker_exclusive_config`` of the ``grpc`` kind. Every field also reads an environment variable, so
connection settings never have to be written into the user's project."""
from __future__ import annotations

from typing import Optional

from funboost.plugins.broker import BrokerOptions
from funboost.transport.options import env_int as _env_int
from funboost.transport.options import env_list, local_target, normalize_addresses
from funboost.transport.options import env_str as _env
from pydantic import Field, field_validator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50061
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class GrpcOptions(BrokerOptions):
    """Options of the ``grpc`` broker kind (see docs/brokers/grpc.md).

    Server side (the consumer process): ``host``, ``port``, ``tls_cert_file``, ``tls_key_file``,
    ``buffer_size``, ``server_threads``. Client side (publishers, ``sync_call``): ``addresses``,
    ``tls_root_cert_file``, ``tls_server_name``. Both: ``token``, ``max_message_bytes``.
    """

    host: str = Field(default_factory=lambda: _env("FUNBOOST_GRPC_HOST") or DEFAULT_HOST)
    port: int = Field(default_factory=lambda: _env_int("FUNBOOST_GRPC_PORT", DEFAULT_PORT), ge=0, le=65535)
    # where publishers send: "host:port" of every consumer; default: [f"{host}:{port}"]
    addresses: Optional[list[str]] = Field(default_factory=lambda: env_list("FUNBOOST_GRPC_ADDRESSES"))
    token: Optional[str] = Field(default_factory=lambda: _env("FUNBOOST_GRPC_TOKEN"))
    tls_cert_file: Optional[str] = Field(default_factory=lambda: _env("FUNBOOST_GRPC_TLS_CERT"))
    tls_key_file: Optional[str] = Field(default_factory=lambda: _env("FUNBOOST_GRPC_TLS_KEY"))
    tls_root_cert_file: Optional[str] = Field(default_factory=lambda: _env("FUNBOOST_GRPC_TLS_ROOT_CERT"))
    # name to verify in the server certificate when it differs from the address's host
    tls_server_name: Optional[str] = Field(default_factory=lambda: _env("FUNBOOST_GRPC_TLS_SERVER_NAME"))
    max_message_bytes: int = Field(
        default_factory=lambda: _env_int("FUNBOOST_GRPC_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES), ge=1024)
    # the consumer's in-process buffer; when full the server answers RESOURCE_EXHAUSTED (backpressure)
    buffer_size: int = Field(default_factory=lambda: _env_int("FUNBOOST_GRPC_BUFFER_SIZE", 1000), ge=1)
    # each waiting sync_call holds one server thread: keep this above the consumer's concurrency
    server_threads: int = Field(default_factory=lambda: _env_int("FUNBOOST_GRPC_SERVER_THREADS", 64), ge=2)
    # how long publish() keeps trying (other consumers, backoff) before it gives up
    publish_timeout: float = Field(default=10.0, gt=0)
    # deadline of one Publish attempt against one server
    rpc_timeout: float = Field(default=5.0, gt=0)
    # how often a server marked down is probed with the gRPC health protocol
    health_check_interval: float = Field(default=0.5, gt=0)
    # False lets unauthenticated health probes through (for load balancers that cannot send a token)
    health_requires_token: bool = True

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return normalize_addresses(value)

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        return list(self.addresses) if self.addresses else [local_target(self.host, self.port)]
