"""The publisher side: channels to every consumer address, round-robin balancing, failover, and the gRPC
health protocol to skip servers that are down.

One :class:`GrpcClient` per distinct connection configuration is shared by the whole process, so marks of
dead servers and open channels are shared by every broker instance that talks to the same consumers.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, Callable, Optional, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from funboost.exceptions import RpcTimeout
from funboost.message import loads as _fast_loads
from funboost.process_local import ProcessLocalDict
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


class _Endpoint:
    __slots__ = ("address", "channel", "publish", "call", "stats", "purge", "health_check", "down_until")

    def __init__(self, address: str, channel: grpc.Channel) -> None:
        self.address = address
        self.channel = channel
        stub = broker_pb2_grpc.FunboostBrokerStub(channel)
        self.publish = stub.Publish
        self.call = stub.Call
        self.stats = stub.Stats
        self.purge = stub.Purge
        self.health_check = health_pb2_grpc.HealthStub(channel).Check
        self.down_until = 0.0  # monotonic time until which this address is skipped (0 = live)


class GrpcClient:
    def __init__(self, options: GrpcOptions) -> None:
        self.options = options
        self.max_body = options.max_message_bytes - _PROTO_OVERHEAD
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
        self.endpoints: list[_Endpoint] = []
        for address in options.target_addresses():
            ch = (grpc.secure_channel(address, creds, options=channel_options) if creds is not None
                  else grpc.insecure_channel(address, options=channel_options))
            self.endpoints.append(_Endpoint(address, ch))
        # the endpoint when there is exactly one address: sync_call's fast path skips the balancing loop
        self._single: Optional[_Endpoint] = self.endpoints[0] if len(self.endpoints) == 1 else None
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._prober: Optional[threading.Thread] = None
        self._closed = False

    # ----------------------------------------------------------------- balancing and health
    def _order(self) -> list[_Endpoint]:
        """Live endpoints in round-robin order, then the ones marked down (tried last, marks may be stale)."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps
        start = next(self._rr) % n
        rotated = eps[start:] + eps[:start]
        now = time.monotonic()
        live = [e for e in rotated if e.down_until <= now]
        if len(live) == n:
            return rotated
        return live + [e for e in rotated if e.down_until > now]

    def _mark_down(self, ep: _Endpoint) -> None:
        # skipped until the health prober sees it SERVING again (the deadline is a safety net)
        ep.down_until = time.monotonic() + 3600.0
        with self._lock:
            if self._prober is None or not self._prober.is_alive():
                self._prober = threading.Thread(target=self._probe_loop, name="funboost-grpc-health", daemon=True)
                self._prober.start()

    def _probe_loop(self) -> None:
        interval = self.options.health_check_interval
        while not self._closed:
            down = [e for e in self.endpoints if e.down_until > time.monotonic()]
            if not down:
                return
            for ep in down:
                if self.check_health(ep, timeout=min(1.0, interval * 2)) == "SERVING":
                    ep.down_until = 0.0
            time.sleep(interval)

    def check_health(self, ep: _Endpoint, timeout: float, service: str = "") -> str:
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

    def health(self, service: str = "", timeout: float = 1.0) -> dict[str, str]:
        """``{address: status}`` for every address (``service`` = a queue name, or "" for the server)."""
        return {ep.address: self.check_health(ep, timeout, service) for ep in self.endpoints}

    # ----------------------------------------------------------------- calls
    def _check_size(self, body: str) -> None:
        size = len(body.encode("utf-8")) if not body.isascii() else len(body)
        if size > self.max_body:
            raise MessageTooLarge(f"message of {size} bytes exceeds max_message_bytes="
                                  f"{self.options.max_message_bytes} (minus {_PROTO_OVERHEAD} of framing)",
                                  code="RESOURCE_EXHAUSTED")

    @staticmethod
    def _fatal(err: grpc.RpcError, address: str) -> GrpcBrokerError:
        code = err.code()
        return GrpcBrokerError(f"gRPC call to {address} failed: {code.name}: {err.details()}",
                               code=code.name if code is not None else None)

    def publish(self, queue_name: str, bodies: Sequence[str]) -> None:
        """Return once consumers have accepted every body; fail over and back off while none can."""
        for b in bodies:
            self._check_size(b)
        pending = list(bodies)
        deadline = time.monotonic() + self.options.publish_timeout
        backoff = 0.02
        last_error = "no address configured"
        while pending:
            progressed = False
            for ep in self._order():
                batch = self._fit(pending)
                try:
                    reply = ep.publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=batch),
                                       timeout=self.options.rpc_timeout, metadata=self.metadata)
                except grpc.RpcError as err:
                    code = err.code()
                    if code is _C.UNAVAILABLE or code is _C.DEADLINE_EXCEEDED:
                        self._mark_down(ep)
                    elif not (code in _ELSEWHERE and (code is not _C.RESOURCE_EXHAUSTED or _is_backpressure(err))):
                        raise self._fatal(err, ep.address) from err
                    last_error = f"{ep.address}: {code.name}: {err.details()}"
                    continue
                if ep.down_until:
                    ep.down_until = 0.0
                del pending[:reply.accepted]
                progressed = progressed or reply.accepted > 0
                if not pending:
                    return
            if not progressed:
                if time.monotonic() >= deadline:
                    raise NoConsumerAvailable(
                        f"no consumer of queue {queue_name!r} accepted {len(pending)} message(s) within "
                        f"{self.options.publish_timeout}s at {[e.address for e in self.endpoints]}; "
                        f"last error: {last_error}", code="UNAVAILABLE")
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def _fit(self, pending: list[str]) -> list[str]:
        """The longest prefix of ``pending`` that fits in one request."""
        total, n = 0, 0
        for b in pending:
            total += len(b) + 8
            if n and total > self.max_body:
                break
            n += 1
        return pending if n == len(pending) else pending[:n]

    def call(self, queue_name: str, body: str, timeout: Optional[float]) -> Any:
        """Run one task on a consumer and return its result, or raise :class:`RemoteTaskError`."""
        if (len(body) if body.isascii() else len(body.encode("utf-8"))) > self.max_body:
            self._check_size(body)  # raises MessageTooLarge
        request = _CallRequest(queue_name=queue_name, body=body)
        ep = self._single
        if ep is not None and not ep.down_until and timeout is not None and timeout > 0:
            # the common case, one live address: a single attempt without the balancing loop; any error
            # takes the general path below, which decides exactly as for a first attempt
            start = time.monotonic()
            try:
                reply = ep.call(request, timeout=timeout, metadata=self.metadata)
            except grpc.RpcError as err:
                first_error = (ep, err)  # handled outside this except: later errors are not chained to it
            else:
                return decode_call_reply(reply.status_json)
            return self._call_loop(queue_name, request, timeout, start, first_error=first_error)
        return self._call_loop(queue_name, request, timeout, time.monotonic())

    def _call_loop(self, queue_name: str, request: Any, timeout: Optional[float], start: float,
                   first_error: Optional[tuple[_Endpoint, grpc.RpcError]] = None) -> Any:
        deadline = start + (timeout if timeout is not None else self.options.publish_timeout + 3600.0)
        backoff = 0.02
        last_error = "no address configured"
        skip_round = first_error is not None  # the fast path's attempt was this round
        if first_error is not None:
            last_error = self._call_failed(queue_name, first_error[0], first_error[1], timeout)
        while True:
            for ep in (() if skip_round else self._order()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    reply = ep.call(request, timeout=remaining, metadata=self.metadata)
                except grpc.RpcError as err:
                    last_error = self._call_failed(queue_name, ep, err, timeout)
                    continue
                if ep.down_until:
                    ep.down_until = 0.0
                return decode_call_reply(reply.status_json)
            skip_round = False
            if time.monotonic() >= deadline:
                raise RpcTimeout(f"sync_call on queue {queue_name!r}: no consumer took it within {timeout}s; "
                                 f"last error: {last_error}")
            if time.monotonic() >= start + self.options.publish_timeout:
                raise NoConsumerAvailable(
                    f"no consumer of queue {queue_name!r} took the sync_call at "
                    f"{[e.address for e in self.endpoints]}; last error: {last_error}", code="UNAVAILABLE")
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _call_failed(self, queue_name: str, ep: _Endpoint, err: grpc.RpcError, timeout: Optional[float]) -> str:
        """Raise for an error that ends a sync_call; otherwise return the error text and let the caller
        try another address (the request surely did not run)."""
        code = err.code()
        if code is _C.DEADLINE_EXCEEDED:
            raise RpcTimeout(f"sync_call on queue {queue_name!r} via {ep.address} did not finish "
                             f"within {timeout}s") from err
        if code is _C.UNAVAILABLE and not _never_connected(err):
            # the consumer may have taken the task and died: running it elsewhere could run it
            # twice, so the caller decides
            self._mark_down(ep)
            raise GrpcBrokerError(f"the consumer at {ep.address} failed during sync_call: "
                                  f"{err.details()}", code=code.name) from err
        if code is _C.UNAVAILABLE:
            self._mark_down(ep)
        elif not (code in _ELSEWHERE and (code is not _C.RESOURCE_EXHAUSTED or _is_backpressure(err))):
            raise self._fatal(err, ep.address) from err
        return f"{ep.address}: {code.name}: {err.details()}"

    def each(self, fn: Callable[[_Endpoint], Any], timeout: float) -> list[Any]:
        """Call ``fn(endpoint)`` on every reachable endpoint; skip those that fail."""
        out = []
        for ep in self.endpoints:
            try:
                out.append(fn(ep))
            except grpc.RpcError:
                continue
        return out

    def close(self) -> None:
        self._closed = True
        for ep in self.endpoints:
            ep.channel.close()


def decode_call_reply(status_json: str) -> Any:
    try:
        status = _fast_loads(status_json)  # orjson
    except ValueError:  # NaN/Infinity written by an older consumer's json encoder
        status = json.loads(status_json)
    if status.get("success"):
        return status.get("result")
    raise RemoteTaskError(status)


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
