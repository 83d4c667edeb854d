"""TCP: the consumer listens on a TCP port, publishers connect to it. No broker server to run.

* ``fetch`` starts (once per host/port and process) the server and drains the queue's bounded
  in-process buffer, which the server fills.
* ``publish`` sends the envelopes to the consumers at ``addresses`` (round robin, failover, health
  checks) and returns once one of them accepted them; a full buffer answers ``BACKPRESSURE`` and the
  client tries another consumer.
* ``sync_call`` runs the function on a consumer and returns its result (or raises its error) in one
  round trip.

Everything but the framing (length-prefixed JSON frames, multiplexed by request id: see
:mod:`funboost_tcp.protocol`) is core's :mod:`funboost.transport`.

Honest guarantees: nothing is persistent; a message accepted by a consumer that then dies is lost.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from funboost.transport.broker import ServingBroker
from funboost.transport.server import ServerRegistry
from funboost_tcp import server as _server
from funboost_tcp.client import TcpClient, get_client
from funboost_tcp.options import TcpOptions


class TcpBroker(ServingBroker):
    kind = "tcp"
    # capabilities: ServingBroker's (not persistent, not at-least-once, request/response, approximate size
    # from a publisher, needs a serving consumer before anything can be published)
    options_model = TcpOptions
    registry: ClassVar[ServerRegistry] = _server.registry

    def __init__(self, queue_name: str, options: Optional[TcpOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: TcpOptions

    def server_config_key(self) -> Any:
        return _server.server_key(self.options)

    def start_server(self) -> _server.TcpServer:
        return _server.TcpServer(self.options)

    def make_client(self) -> TcpClient:
        return get_client(self.client_options())

    @property
    def client(self) -> TcpClient:
        return super().client  # type: ignore[return-value]
