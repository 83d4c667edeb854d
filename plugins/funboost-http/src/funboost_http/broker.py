"""HTTP: the consumer serves a small ASGI app (uvicorn, in a thread of its own), publishers are keep-alive
HTTP clients. No broker server to run, and any HTTP client (curl, another language) can push a task.

* ``run_consumer`` / ``fetch`` start (once per host/port and process) the HTTP server; ``fetch`` drains
  the queue's bounded in-process buffer, which ``POST /queues/{queue}/messages`` fills.
* ``publish`` POSTs the JSON envelopes (a JSON list per batch) to the consumers at ``addresses`` (round
  robin, failover, health checks) and returns once one of them accepted them; a full buffer answers 503
  and the client tries another consumer.
* ``sync_call`` is ``POST /queues/{queue}/call``: the reply carries the function's final status.

Everything but the HTTP framing is core's :mod:`funboost.transport` (:class:`ServingBroker`: buffers, dead
letters, failover, inline calls); this class only says how to start a server and a client.

Honest guarantees: nothing is persistent; a message accepted by a consumer that then dies is lost.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from funboost.transport.broker import ServingBroker
from funboost.transport.server import ServerRegistry
from funboost_http import server as _server
from funboost_http.client import HttpClient, get_client
from funboost_http.options import HttpOptions


class HttpBroker(ServingBroker):
    kind = "http"
    # capabilities: ServingBroker's (not persistent, not at-least-once, request_response, approximate size)
    options_model = HttpOptions
    registry: ClassVar[ServerRegistry] = _server.registry

    def __init__(self, queue_name: str, options: Optional[HttpOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: HttpOptions

    def server_config_key(self) -> Any:
        return _server.server_key(self.options)

    def start_server(self) -> _server.HttpServer:
        return _server.HttpServer(self.options)

    def make_client(self) -> HttpClient:
        return get_client(self.client_options())

    @property
    def client(self) -> HttpClient:
        return super().client  # type: ignore[return-value]
