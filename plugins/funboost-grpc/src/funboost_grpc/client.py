"""The publisher side: gRPC channels to every consumer address. Balancing, failover, backoff and the
probing of servers marked down are core's (:class:`funboost.transport.client.TransportClient`); this
module is the gRPC framing: channels, stubs, status codes and the gRPC health protocol.

One :class:`GrpcClient` per distinct connection configuration is shared by the whole process, so marks of
dead servers and open channels are shared by every broker instance that talks to the same consumers.
"""
from __future__ import annotations

from typing import Any, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from funboost.process_local import ProcessLocalDict
from funboost.transport.calls import decode_status, result_of
from funboost.transport.client import Endpoint, TransportClient
from funboost.transport.errors import AttemptFailed, AttemptTimedOut, EndpointRefused, EndpointUnreachable
from funboost_grpc.errors import GrpcBrokerError, MessageTooLarge, NoConsumerAvailable, RemoteTaskError
from funboost_grpc.options import GrpcOptions
from funboost_grpc.proto import broker_pb2, broker_pb2_grpc
from funboost_grpc.server import BACKPRESSURE_TRAILER, TOKEN_HEADER

_C = grpc.StatusCode
# the request never reached a consumer that could run it: another address may take it
_ELSEWHERE = {_C.NOT_FOUND, _C.RESOURCE_EXHAUSTED, _C.UNAVAILABLE}
_CallRequest = broker_pb2.CallRequest
_PROTO_OVERHEAD = 256  # bytes of framing around a body; the size check before sending keeps this margin


def _is_backpressure(err: grpc.RpcError) -> bool:
    if err.code() is not _C.RESOURCE_EXHAUSTED:
        return False
    details = (err.details() or "").lower()
    if "larger than max" in details:  # the server's message size limit: no other server will differ
        return False
    if "concurrent rpc limit" in details:  # grpc's own bound on calls under way
        return True
    return any(k == BACKPRESSURE_TRAILER for k, _ in (err.trailing_metadata() or ()))


def _never_connected(err: grpc.RpcError) -> bool:
    """True when the call surely did not reach a server (so a sync_call may go elsewhere without
    running the function twice)."""
    if err.code() is not _C.UNAVAILABLE:
        return False
    details = (err.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details or "dns resolution" in details


def _attempt_error(err: grpc.RpcError, address: str) -> Exception:
    """What one failed RPC means for failover (an :class:`AttemptFailed`), or the error that ends it."""
    code = err.code()
    detail = f"{address}: {code.name if code is not None else 'UNKNOWN'}: {err.details()}"
    name = code.name if code is not None else None
    if code is _C.UNAVAILABLE:
        return EndpointUnreachable(detail, name, maybe_processed=not _never_connected(err))
    if code is _C.DEADLINE_EXCEEDED:
        return AttemptTimedOut(detail, name)
    if code in _ELSEWHERE and (code is not _C.RESOURCE_EXHAUSTED or _is_backpressure(err)):
        return EndpointRefused(detail, name)
    return GrpcBrokerError(f"gRPC call to {address} failed: {name}: {err.details()}", code=name)


class GrpcEndpoint(Endpoint):
    __slots__ = ("channel", "publish", "call", "stats", "purge", "health_check")

    def __init__(self, address: str, channel: grpc.Channel) -> None:
        super().__init__(address)
        self.channel = channel
        stub = broker_pb2_grpc.FunboostBrokerStub(channel)
        self.publish = stub.Publish
        self.call = stub.Call
        self.stats = stub.Stats
        self.purge = stub.Purge
        self.health_check = health_pb2_grpc.HealthStub(channel).Check


_Endpoint = GrpcEndpoint  # the former name


class GrpcClient(TransportClient[GrpcEndpoint]):
    error = GrpcBrokerError
    no_consumer_error = NoConsumerAvailable
    too_large_error = MessageTooLarge
    remote_error = RemoteTaskError
    transport_name = "grpc"

    def __init__(self, options: GrpcOptions) -> None:
        self.options = options
        self.metadata: Optional[tuple[tuple[str, str], ...]] = (
            ((TOKEN_HEADER, f"Bearer {options.token}"),) if options.token else None)
        channel_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            # reconnect quickly to a consumer that comes back (grpc's default backoff grows to 2 minutes)
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # one channel per address even if another library opened one with the same arguments
            ("grpc.use_local_subchannel_pool", 1),
        ]
        creds = None
        if options.tls_root_cert_file:
            with open(options.tls_root_cert_file, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            if options.tls_server_name:
                channel_options.append(("grpc.ssl_target_name_override", options.tls_server_name))
        endpoints = []
        for address in options.target_addresses():
            ch = (grpc.secure_channel(address, creds, options=channel_options) if creds is not None
                  else grpc.insecure_channel(address, options=channel_options))
            endpoints.append(GrpcEndpoint(address, ch))
        super().__init__(endpoints, max_body=options.max_message_bytes - _PROTO_OVERHEAD,
                         max_message_bytes=options.max_message_bytes, publish_timeout=options.publish_timeout,
                         health_check_interval=options.health_check_interval)

    # ----------------------------------------------------------------- framing
    def send_publish(self, ep: GrpcEndpoint, queue_name: str, bodies: list[str]) -> int:
        try:
            reply = ep.publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=bodies),
                               timeout=self.options.rpc_timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise _attempt_error(err, ep.address) from err
        return reply.accepted

    def prepare_call(self, queue_name: str, body: str) -> Any:
        return _CallRequest(queue_name=queue_name, body=body)

    def send_call(self, ep: GrpcEndpoint, request: Any, timeout: float) -> str:
        try:
            return ep.call(request, timeout=timeout, metadata=self.metadata).status_json
        except grpc.RpcError as err:
            raise _attempt_error(err, ep.address) from err

    def send_stats(self, ep: GrpcEndpoint, queue_name: str) -> tuple[int, int]:
        try:
            r = ep.stats(broker_pb2.StatsRequest(queue_name=queue_name), timeout=self.options.rpc_timeout,
                         metadata=self.metadata)
        except grpc.RpcError as err:
            raise AttemptFailed(f"{ep.address}: {err.code()}: {err.details()}") from None
        return r.ready, r.in_flight

    def send_purge(self, ep: GrpcEndpoint, queue_name: str) -> int:
        try:
            r = ep.purge(broker_pb2.PurgeRequest(queue_name=queue_name), timeout=self.options.rpc_timeout,
                         metadata=self.metadata)
        except grpc.RpcError as err:
            raise AttemptFailed(f"{ep.address}: {err.code()}: {err.details()}") from None
        return r.purged

    def close_endpoint(self, ep: GrpcEndpoint) -> None:
        ep.channel.close()

    # ----------------------------------------------------------------- the gRPC health protocol
    def check_health(self, ep: GrpcEndpoint, timeout: float, service: str = "") -> str:
        """The gRPC health protocol's status name for ``service`` at ``ep`` (``"UNREACHABLE"`` on error)."""
        try:
            resp = ep.health_check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                                   metadata=self.metadata)
        except grpc.RpcError as err:
            if err.code() is _C.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            if err.code() is _C.UNAUTHENTICATED:
                return "UNAUTHENTICATED"
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def decode_call_reply(status_json: str) -> Any:
    """The result in a Call reply, or raise :class:`RemoteTaskError`."""
    return result_of(decode_status(status_json), RemoteTaskError)


# per process: grpc channels must not cross a fork (a forked child opens its own; the parent's stay untouched)
_clients: ProcessLocalDict[tuple, GrpcClient] = ProcessLocalDict()


def _client_key(options: GrpcOptions) -> tuple:
    return (tuple(options.target_addresses()), options.token, options.tls_root_cert_file, options.tls_server_name,
            options.max_message_bytes, options.publish_timeout, options.rpc_timeout, options.health_check_interval)


def get_client(options: GrpcOptions) -> GrpcClient:
    return _clients.get_or_create(_client_key(options), lambda: GrpcClient(options))


def close_clients() -> None:
    """Close every channel this process opened to consumers (tests, interpreter shutdown)."""
    for c in _clients.clear():
        c.close()
