"""``broker_exclusive_config`` of the ``tcp`` kind. Every option also reads ``FUNBOOST_TCP_<OPTION>``
(e.g. ``FUNBOOST_TCP_TOKEN``, ``FUNBOOST_TCP_ADDRESSES=10.0.0.5:50071,10.0.0.6:50071``), so connection
settings never have to be written into the user's project. The options every server transport has are
in :class:`funboost.transport.options.TransportOptions`."""
from __future__ import annotations

from typing import ClassVar

from funboost.transport.options import DEFAULT_HOST, MutualTlsTransportOptions
from pydantic import Field

__all__ = ["TcpOptions", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_FRAME_BYTES"]

DEFAULT_PORT = 50071
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class TcpOptions(MutualTlsTransportOptions):
    """Options of the ``tcp`` broker kind (see docs/brokers/tcp.md).

    Server side (the consumer process): ``host``, ``port``, ``buffer_size``, ``tls_cert_file``,
    ``tls_key_file``, ``tls_client_ca_file``, ``call_threads``, ``max_in_flight_per_connection``. Client
    side (publishers, ``sync_call``): ``addresses``, ``tls``, ``tls_ca_file``, ``tls_client_cert_file``,
    ``tls_client_key_file``, ``tls_server_name``, ``publish_timeout``, ``rpc_timeout``, ``connect_timeout``,
    ``health_check_interval`` (PING), ``connections_per_consumer``. Both: ``token``, ``max_frame_bytes``.
    """

    env_prefix: ClassVar[str] = "FUNBOOST_TCP_"

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # largest frame payload either side accepts; a bigger request gets TOO_LARGE (the connection survives)
    max_frame_bytes: int = Field(DEFAULT_MAX_FRAME_BYTES, ge=1024)
    # consumer: threads that run sync_call requests (each waiting call holds one)
    call_threads: int = Field(64, ge=1)
    # consumer: requests of one connection under way before the server stops reading from it
    max_in_flight_per_connection: int = Field(256, ge=1)
    # publisher (plain TCP): connections to each consumer, shared by the process's threads (see client.py)
    connections_per_consumer: int = Field(8, ge=1)
    # deadline of one publish / stats / purge attempt against one consumer
    rpc_timeout: float = Field(5.0, gt=0)
    # deadline of opening a connection to one consumer
    connect_timeout: float = Field(3.0, gt=0)
