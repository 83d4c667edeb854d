"""The consumer side: one gRPC server per (host, port) and process. The queues it hosts, their buffers
and the request handling are core's (:class:`funboost.transport.server.QueueServer`); this module is the
gRPC framing: the servicer, status codes, the token interceptor, TLS and the health service.

A full buffer answers RESOURCE_EXHAUSTED with the trailer ``funboost-backpressure`` so the client tries
another consumer instead of this server buffering without limit.
"""
from __future__ import annotations

import hmac
import logging
from concurrent import futures
from typing import Any, Callable, NoReturn, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from funboost.transport.errors import Backpressure, BadRequest, CallDeadlineExceeded, RequestError, UnknownQueue
from funboost.transport.server import QueueServer, ServerRegistry
from funboost.transport.security import require_token_for_bind
from funboost_grpc.options import GrpcOptions
from funboost_grpc.proto import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("funboost.grpc")

BACKPRESSURE_TRAILER = "funboost-backpressure"
TOKEN_HEADER = "authorization"
SERVICE_NAME = broker_pb2.DESCRIPTOR.services_by_name["FunboostBroker"].full_name
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_CallReply = broker_pb2.CallReply
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _abort(context: grpc.ServicerContext, err: RequestError) -> NoReturn:
    """Answer a refused request with its gRPC status."""
    if isinstance(err, Backpressure):
        context.set_trailing_metadata(((BACKPRESSURE_TRAILER, "1"),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
    if isinstance(err, UnknownQueue):
        context.abort(grpc.StatusCode.NOT_FOUND, str(err))
    if isinstance(err, BadRequest):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    if isinstance(err, CallDeadlineExceeded):
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
    context.abort(grpc.StatusCode.INTERNAL, str(err))
    raise AssertionError("unreachable")  # context.abort raises


class _Servicer(broker_pb2_grpc.FunboostBrokerServicer):
    def __init__(self, server: "GrpcServer") -> None:
        self._server = server

    def Publish(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            accepted = self._server.handle_publish(request.queue_name, request.bodies)
        except RequestError as err:
            _abort(context, err)
        return broker_pb2.PublishReply(accepted=accepted)

    def Call(self, request, context):  # noqa: N802
        try:
            status_json = self._server.handle_call(request.queue_name, request.body, context.time_remaining())
        except RequestError as err:
            _abort(context, err)
        return _CallReply(status_json=status_json)

    def Stats(self, request, context):  # noqa: N802
        try:
            ready, in_flight, capacity = self._server.stats(request.queue_name)
        except RequestError as err:
            _abort(context, err)
        return broker_pb2.StatsReply(ready=ready, in_flight=in_flight, capacity=capacity)

    def Purge(self, request, context):  # noqa: N802
        try:
            return broker_pb2.PurgeReply(purged=self._server.purge(request.queue_name))
        except RequestError as err:
            _abort(context, err)


class _TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose ``authorization: Bearer <token>`` metadata is missing or wrong."""

    def __init__(self, token: str, protect_health: bool) -> None:
        self._expected = f"Bearer {token}".encode()
        self._protect_health = protect_health

    def intercept_service(self, continuation: Callable, handler_call_details: Any):
        if not self._protect_health and handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_HEADER:
                got = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(got, self._expected):
                    return continuation(handler_call_details)
                break
        handler = continuation(handler_call_details)
        return _refusing_handler(handler)


def _refuse(request: Any, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token")


def _refusing_handler(handler: Optional[grpc.RpcMethodHandler]) -> grpc.RpcMethodHandler:
    # answer with the same streaming shape as the real method so the client sees a clean status
    if handler is not None and handler.response_streaming and not handler.request_streaming:
        return grpc.unary_stream_rpc_method_handler(lambda r, c: iter(_refuse(r, c) or ()))
    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(lambda r, c: iter(_refuse(r, c) or ()))
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    return grpc.unary_unary_rpc_method_handler(_refuse)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_key(options: GrpcOptions) -> tuple:
    """The options two brokers must agree on to share one server."""
    return (options.token, options.tls_cert_file, options.tls_key_file, options.max_message_bytes,
            options.server_threads, options.health_requires_token)


class GrpcServer(QueueServer):
    """One started gRPC server and the queues it hosts."""

    def __init__(self, options: GrpcOptions) -> None:
        super().__init__(server_key(options))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        max_bytes = options.max_message_bytes
        grpc_options = [
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", -1),
            # a second process on the same port must fail to bind, not share the port silently
            ("grpc.so_reuseport", 0),
        ]
        # like tcp and http: a port other hosts can reach never runs tasks for anyone without a token
        require_token_for_bind("grpc", options.host, options.token)
        interceptors = [_TokenInterceptor(options.token, options.health_requires_token)] if options.token else []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.server_threads, thread_name_prefix="funboost-grpc"),
            options=grpc_options, interceptors=interceptors,
            # beyond this many calls under way, grpc answers RESOURCE_EXHAUSTED: the client goes elsewhere
            maximum_concurrent_rpcs=options.server_threads * 4)
        broker_pb2_grpc.add_FunboostBrokerServicer_to_server(_Servicer(self), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host = options.host
        bind = f"[{host}]:{options.port}" if ":" in host and not host.startswith("[") else f"{host}:{options.port}"
        try:
            if options.tls_cert_file or options.tls_key_file:
                if not (options.tls_cert_file and options.tls_key_file):
                    raise ValueError("TLS needs both tls_cert_file and tls_key_file")
                creds = grpc.ssl_server_credentials([(_read(options.tls_key_file), _read(options.tls_cert_file))])
                port = self.server.add_secure_port(bind, creds)
            else:
                port = self.server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"funboost grpc: cannot listen on {bind}: {exc} (port in use?)") from exc
        if not port:
            raise OSError(f"funboost grpc: cannot listen on {bind} (port in use?)")
        self.port = port
        self.address = f"{bind.rsplit(':', 1)[0]}:{port}"
        self.server.start()
        self.health.set("", _SERVING)
        self.health.set(SERVICE_NAME, _SERVING)
        logger.info("funboost grpc consumer listening on %s%s", self.address, " (TLS)" if options.tls_cert_file else "")

    def queue_state_changed(self, name: str, serving: bool) -> None:
        self.health.set(name, _SERVING if serving else _NOT_SERVING)

    def stop(self, grace: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1.0)


#: the gRPC servers of this process, one per (host, port)
registry: ServerRegistry[GrpcServer] = ServerRegistry("grpc")
