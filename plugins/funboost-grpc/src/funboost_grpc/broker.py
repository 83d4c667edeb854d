"""GRPC: the consumer hosts a gRPC server, publishers are clients. No broker server to run.

* ``fetch`` starts (once per host/port and process) the gRPC server and drains the queue's bounded
  in-process buffer, which the server's handlers fill.
* ``publish`` sends the JSON envelopes to the consumers at ``addresses`` (round robin, failover, health
  checks) and returns once one of them accepted them. A full buffer answers RESOURCE_EXHAUSTED and the
  client tries another consumer: backpressure instead of unbounded buffering.
* ``sync_call`` runs the function on a consumer and returns its result (or raises its error) in one
  round trip: the server hands the engine a :class:`Delivery` whose ``reply`` the engine calls with the
  final status.

Everything but the gRPC framing is core's :mod:`funboost.transport` (:class:`ServingBroker`: buffers,
dead letters, failover, inline calls); this class only says how to start a server and a client.

Honest guarantees: nothing is persistent; a message accepted by a consumer that then dies is lost.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from funboost.transport.broker import ServingBroker
from funboost.transport.server import ServerRegistry
from funboost_grpc import server as _server
from funboost_grpc.client import GrpcClient, get_client
from funboost_grpc.options import GrpcOptions


class GrpcBroker(ServingBroker):
    kind = "grpc"
    # capabilities: ServingBroker's (not persistent, not at-least-once, request_response, needs a serving consumer)
    options_model = GrpcOptions
    registry: ClassVar[ServerRegistry] = _server.registry

    def __init__(self, queue_name: str, options: Optional[GrpcOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: GrpcOptions

    def server_config_key(self) -> Any:
        return _server.server_key(self.options)

    def start_server(self) -> _server.GrpcServer:
        return _server.GrpcServer(self.options)

    def make_client(self) -> GrpcClient:
        return get_client(self.client_options())

    @property
    def client(self) -> GrpcClient:
        return super().client  # type: ignore[return-value]
