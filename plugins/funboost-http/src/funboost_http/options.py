"""``broker_exclusive_config`` of the ``http`` kind. Every field also reads an environment variable
(``FUNBOOST_HTTP_<FIELD>``; not ``health_check_interval``, ``health_requires_token``), so connection
settings never have to be written into the user's project. The options every server transport has are
in :class:`funboost.transport.options.TransportOptions`."""
from __future__ import annotations

from typing import ClassVar, Optional

from funboost.transport.options import DEFAULT_HOST, MutualTlsTransportOptions, local_target, normalize_addresses
from pydantic import Field, field_validator

__all__ = ["HttpOptions", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_MESSAGE_BYTES"]

DEFAULT_PORT = 8765
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class HttpOptions(MutualTlsTransportOptions):
    """Options of the ``http`` broker kind (see docs/brokers/http.md).

    Server side (the consumer process): ``host``, ``port``, ``buffer_size``, ``server_threads``,
    ``keep_alive_timeout``, ``health_requires_token``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_client_ca_file``. Client side (publishers, ``sync_call``): ``addresses``, ``pool_size``,
    ``publish_timeout``, ``request_timeout``, ``health_check_interval`` (GET /healthz), ``tls``,
    ``tls_ca_file``, ``tls_client_cert_file``, ``tls_client_key_file``, ``tls_server_name``. Both: ``token``
    (sent as "Authorization: Bearer <token>"), ``max_message_bytes``.
    """

    env_prefix: ClassVar[str] = "FUNBOOST_HTTP_"
    env_skip: ClassVar[frozenset[str]] = frozenset({"health_check_interval", "health_requires_token"})

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # largest request body the server reads (bigger: 413) and the client sends (bigger: MessageTooLarge)
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    # threads that run sync_call requests (each waiting call holds one): keep it above the concurrency
    server_threads: int = Field(64, ge=2)
    # seconds an idle keep-alive connection stays open on the server
    keep_alive_timeout: int = Field(75, ge=1)
    # False lets GET /healthz through without a token (for load balancers that cannot send one)
    health_requires_token: bool = True
    # keep-alive connections a publisher keeps per consumer address (more threads than this open extra ones)
    pool_size: int = Field(32, ge=1)
    # deadline of one publish / stats / purge request against one consumer
    request_timeout: float = Field(5.0, gt=0)

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        # "http://host:port" is accepted too (what a user copies from a browser or curl); an "https://" address
        # is kept as such here and turns TLS on (see client_tls)
        return normalize_addresses([a.strip().removeprefix("http://").rstrip("/") for a in value])

    @property
    def client_tls(self) -> bool:
        """Whether publishers use HTTPS (also implied by an "https://" address)."""
        return super().client_tls or any(a.startswith("https://") for a in self.addresses or ())

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        if self.addresses:
            return [a.removeprefix("https://") for a in self.addresses]
        return [local_target(self.host, self.port)]
