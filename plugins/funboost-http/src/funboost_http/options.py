"""``broker_exclusive_config`` of the ``http`` kind. Every field also reads an environment variable
(``FUNBOOST_HTTP_<FIELD>``), so connection settings never have to be written into the user's project."""
from __future__ import annotations

from typing import Optional

from funboost.plugins.broker import BrokerOptions
from funboost.transport.options import (check_tls_options, env_bool, env_float, env_int, env_list, env_str,
                                        local_target, normalize_addresses)
from pydantic import Field, field_validator, model_validator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class HttpOptions(BrokerOptions):
    """Options of the ``http`` broker kind (see docs/brokers/http.md).

    Server side (the consumer process): ``host``, ``port``, ``buffer_size``, ``server_threads``,
    ``keep_alive_timeout``, ``health_requires_token``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_client_ca_file``. Client side (publishers, ``sync_call``): ``addresses``, ``pool_size``,
    ``publish_timeout``, ``request_timeout``, ``health_check_interval``, ``tls``, ``tls_ca_file``,
    ``tls_client_cert_file``, ``tls_client_key_file``, ``tls_server_name``. Both: ``token``,
    ``max_message_bytes``.
    """

    # 127.0.0.1 by default; any other address refuses to start without a token
    host: str = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_HOST") or DEFAULT_HOST)
    port: int = Field(default_factory=lambda: env_int("FUNBOOST_HTTP_PORT", DEFAULT_PORT), ge=0, le=65535)
    # where publishers send: "host:port" of every consumer; default: this consumer's own host:port
    addresses: Optional[list[str]] = Field(default_factory=lambda: env_list("FUNBOOST_HTTP_ADDRESSES"))
    # shared secret, sent as "Authorization: Bearer <token>"; required to listen on a non-loopback address
    token: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TOKEN"))
    # largest request body the server reads (bigger: 413) and the client sends (bigger: MessageTooLarge)
    max_message_bytes: int = Field(
        default_factory=lambda: env_int("FUNBOOST_HTTP_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES), ge=1024)
    # the consumer's in-process buffer; when full the server answers 503 and the client tries elsewhere
    buffer_size: int = Field(default_factory=lambda: env_int("FUNBOOST_HTTP_BUFFER_SIZE", 1000), ge=1)
    # threads that run sync_call requests (each waiting call holds one): keep it above the concurrency
    server_threads: int = Field(default_factory=lambda: env_int("FUNBOOST_HTTP_SERVER_THREADS", 64), ge=2)
    # seconds an idle keep-alive connection stays open on the server
    keep_alive_timeout: int = Field(default_factory=lambda: env_int("FUNBOOST_HTTP_KEEP_ALIVE_TIMEOUT", 75), ge=1)
    # keep-alive connections a publisher keeps per consumer address (more threads than this open extra ones)
    pool_size: int = Field(default_factory=lambda: env_int("FUNBOOST_HTTP_POOL_SIZE", 32), ge=1)
    # how long publish() keeps trying (other consumers, backoff) before it raises NoConsumerAvailable
    publish_timeout: float = Field(default_factory=lambda: env_float("FUNBOOST_HTTP_PUBLISH_TIMEOUT", 10.0), gt=0)
    # deadline of one publish / stats / purge request against one consumer
    request_timeout: float = Field(default_factory=lambda: env_float("FUNBOOST_HTTP_REQUEST_TIMEOUT", 5.0), gt=0)
    # how often a consumer marked down is probed with GET /healthz
    health_check_interval: float = Field(default=0.5, gt=0)
    # False lets GET /healthz through without a token (for load balancers that cannot send one)
    health_requires_token: bool = True
    # consumer: serve HTTPS with this certificate and key (paths); with tls_client_ca_file, every client
    # must present a certificate signed by that CA (which also allows a non-loopback bind without a token)
    tls_cert_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_CERT_FILE"))
    tls_key_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_KEY_FILE"))
    tls_client_ca_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_CLIENT_CA_FILE"))
    # publisher: use HTTPS (also implied by an "https://" address or any of the options below); verify the
    # consumer's certificate against tls_ca_file (the CA or self-signed certificate), else the system's CAs
    tls: bool = Field(default_factory=lambda: env_bool("FUNBOOST_HTTP_TLS"))
    tls_ca_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_CA_FILE"))
    tls_client_cert_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_CLIENT_CERT_FILE"))
    tls_client_key_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_CLIENT_KEY_FILE"))
    # name to verify in the consumer's certificate when it differs from the address's host
    tls_server_name: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_HTTP_TLS_SERVER_NAME"))

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        # "http://host:port" is accepted too (what a user copies from a browser or curl); an "https://" address
        # is kept as such here and turns TLS on (see client_tls)
        return normalize_addresses([a.strip().removeprefix("http://").rstrip("/") for a in value])

    @model_validator(mode="after")
    def _check_tls(self) -> "HttpOptions":
        check_tls_options(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, self.tls_client_cert_file,
                          self.tls_client_key_file)
        return self

    @property
    def client_tls(self) -> bool:
        """Whether publishers use HTTPS."""
        return bool(self.tls or self.tls_ca_file or self.tls_client_cert_file
                    or any(a.startswith("https://") for a in self.addresses or ()))

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        if self.addresses:
            return [a.removeprefix("https://") for a in self.addresses]
        return [local_target(self.host, self.port)]
