"""``broker_exclusive_config`` of the ``tcp`` kind. Every option also reads ``FUNBOOST_TCP_<OPTION>``
(e.g. ``FUNBOOST_TCP_TOKEN``, ``FUNBOOST_TCP_ADDRESSES=10.0.0.5:50071,10.0.0.6:50071``), so connection
settings never have to be written into the user's project."""
from __future__ import annotations

from typing import Optional

from funboost.plugins.broker import BrokerOptions
from funboost.transport.options import (check_tls_options, env_bool, env_float, env_int, env_list, env_str,
                                        local_target, normalize_addresses)
from pydantic import Field, field_validator, model_validator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50071
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class TcpOptions(BrokerOptions):
    """Options of the ``tcp`` broker kind (see docs/brokers/tcp.md).

    Server side (the consumer process): ``host``, ``port``, ``buffer_size``, ``tls_cert_file``,
    ``tls_key_file``, ``tls_client_ca_file``, ``call_threads``, ``max_in_flight_per_connection``. Client
    side (publishers, ``sync_call``): ``addresses``, ``tls``, ``tls_ca_file``, ``tls_client_cert_file``,
    ``tls_client_key_file``, ``tls_server_name``, ``publish_timeout``, ``rpc_timeout``, ``connect_timeout``,
    ``health_check_interval``. Both: ``token``, ``max_frame_bytes``.
    """

    # 127.0.0.1 by default; any other address refuses to start without a token or client certificates
    host: str = Field(default_factory=lambda: env_str("FUNBOOST_TCP_HOST") or DEFAULT_HOST)
    port: int = Field(default_factory=lambda: env_int("FUNBOOST_TCP_PORT", DEFAULT_PORT), ge=0, le=65535)
    # where publishers send: "host:port" of every consumer; default: this consumer's own host:port
    addresses: Optional[list[str]] = Field(default_factory=lambda: env_list("FUNBOOST_TCP_ADDRESSES"))
    # shared secret carried by every request frame, checked in constant time
    token: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TOKEN"))
    # largest frame payload either side accepts; a bigger request gets TOO_LARGE (the connection survives)
    max_frame_bytes: int = Field(
        default_factory=lambda: env_int("FUNBOOST_TCP_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES), ge=1024)
    # the consumer's in-process buffer; when full the server answers BACKPRESSURE and the client goes elsewhere
    buffer_size: int = Field(default_factory=lambda: env_int("FUNBOOST_TCP_BUFFER_SIZE", 1000), ge=1)
    # consumer: threads that run sync_call requests (each waiting call holds one)
    call_threads: int = Field(default_factory=lambda: env_int("FUNBOOST_TCP_CALL_THREADS", 64), ge=1)
    # consumer: requests of one connection under way before the server stops reading from it
    max_in_flight_per_connection: int = Field(
        default_factory=lambda: env_int("FUNBOOST_TCP_MAX_IN_FLIGHT_PER_CONNECTION", 256), ge=1)
    # consumer: TLS certificate and key; with tls_client_ca_file, publishers must present a certificate
    tls_cert_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_CERT_FILE"))
    tls_key_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_KEY_FILE"))
    tls_client_ca_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_CLIENT_CA_FILE"))
    # publisher: connect with TLS; trust tls_ca_file (the CA or self-signed certificate), else the system's CAs
    tls: bool = Field(default_factory=lambda: env_bool("FUNBOOST_TCP_TLS"))
    tls_ca_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_CA_FILE"))
    tls_client_cert_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_CLIENT_CERT_FILE"))
    tls_client_key_file: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_CLIENT_KEY_FILE"))
    # name to verify in the consumer's certificate when it differs from the address's host
    tls_server_name: Optional[str] = Field(default_factory=lambda: env_str("FUNBOOST_TCP_TLS_SERVER_NAME"))
    # how long publish() keeps trying (other consumers, backoff) before it gives up
    publish_timeout: float = Field(default_factory=lambda: env_float("FUNBOOST_TCP_PUBLISH_TIMEOUT", 10.0), gt=0)
    # deadline of one publish / stats / purge attempt against one consumer
    rpc_timeout: float = Field(default_factory=lambda: env_float("FUNBOOST_TCP_RPC_TIMEOUT", 5.0), gt=0)
    # deadline of opening a connection to one consumer
    connect_timeout: float = Field(default_factory=lambda: env_float("FUNBOOST_TCP_CONNECT_TIMEOUT", 3.0), gt=0)
    # how often a consumer marked down is probed (PING)
    health_check_interval: float = Field(
        default_factory=lambda: env_float("FUNBOOST_TCP_HEALTH_CHECK_INTERVAL", 0.5), gt=0)

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return normalize_addresses(value)

    @model_validator(mode="after")
    def _check_tls(self) -> "TcpOptions":
        check_tls_options(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, self.tls_client_cert_file,
                          self.tls_client_key_file)
        return self

    @property
    def client_tls(self) -> bool:
        """Whether publishers connect with TLS."""
        return bool(self.tls or self.tls_ca_file or self.tls_client_cert_file)

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        return list(self.addresses) if self.addresses else [local_target(self.host, self.port)]
