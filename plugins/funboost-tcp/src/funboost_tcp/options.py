"""``broker_exclusive_config`` of the ``tcp`` kind. Every option also reads ``FUNBOOST_TCP_<OPTION>``
(e.g. ``FUNBOOST_TCP_TOKEN``, ``FUNBOOST_TCP_ADDRESSES=10.0.0.5:50071,10.0.0.6:50071``)."""
from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field, model_validator

from funboost.transport.options import ServerTransportOptions

DEFAULT_PORT = 50071
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class TcpOptions(ServerTransportOptions):
    """Options of the ``tcp`` broker kind (see docs/brokers/tcp.md).

    Server side (the consumer process): ``host``, ``port``, ``buffer_size``, ``tls_cert_file``,
    ``tls_key_file``, ``tls_client_ca_file``, ``call_threads``, ``max_in_flight_per_connection``. Client
    side (publishers, ``sync_call``): ``addresses``, ``tls_ca_file``, ``tls_client_cert_file``,
    ``tls_client_key_file``, ``tls_server_name``, ``connect_timeout``. Both: ``token``, ``max_frame_bytes``.
    """

    env_prefix: ClassVar[str] = "TCP"

    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    # largest frame payload either side accepts; a bigger request gets TOO_LARGE (the connection survives)
    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME_BYTES, ge=1024)
    # consumer: TLS certificate and key; with tls_client_ca_file, publishers must present a certificate
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    tls_client_ca_file: Optional[str] = None
    # publisher: enables TLS; the CA (or self-signed certificate) to trust, None = the system's CAs
    tls: bool = False
    tls_ca_file: Optional[str] = None
    tls_client_cert_file: Optional[str] = None
    tls_client_key_file: Optional[str] = None
    # name to verify in the consumer's certificate when it differs from the address's host
    tls_server_name: Optional[str] = None
    # consumer: threads that run sync_call requests (each waiting call holds one)
    call_threads: int = Field(default=64, ge=1)
    # consumer: requests of one connection under way before the server stops reading from it
    max_in_flight_per_connection: int = Field(default=256, ge=1)
    # publisher: deadline of opening a connection to one consumer
    connect_timeout: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _check_tls(self) -> "TcpOptions":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS on the consumer needs both tls_cert_file and tls_key_file")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (client certificates) needs tls_cert_file and tls_key_file")
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise ValueError("a client certificate needs both tls_client_cert_file and tls_client_key_file")
        return self

    @property
    def client_tls(self) -> bool:
        """Whether publishers connect with TLS."""
        return bool(self.tls or self.tls_ca_file or self.tls_client_cert_file)
