"""The consumer side: one gRPC server per (host, port) and process, hosting a bounded in-process buffer for
each queue that a broker in this process consumes.

The server's handlers fill the buffers; :meth:`GrpcBroker.fetch` drains them. A full buffer answers
RESOURCE_EXHAUSTED with the trailer ``funboost-backpressure`` so the client tries another consumer
instead of this server buffering without limit.
"""
from __future__ import annotations

import hmac
import json
import logging
import operator
import threading
import time
from collections import deque
from concurrent import futures
from typing import Any, Callable, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from funboost.message import loads as _fast_loads
from funboost.plugins.broker import Delivery
from funboost.state.base import dumps_state
from funboost_grpc.options import GrpcOptions
from funboost_grpc.proto import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("funboost.grpc")

BACKPRESSURE_TRAILER = "funboost-backpressure"
TOKEN_HEADER = "authorization"
SERVICE_NAME = broker_pb2.DESCRIPTOR.services_by_name["FunboostBroker"].full_name
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_CallReply = broker_pb2.CallReply


class PendingCall:
    """A ``Call`` request waiting for its result. ``reply`` is handed to the engine as ``Delivery.reply``.

    The event is made only when the handler has to wait (a call run inline never needs one)."""

    __slots__ = ("_event", "status", "done", "cancelled")

    def __init__(self) -> None:
        self._event: Optional[threading.Event] = None
        self.status: Any = None
        self.done = False
        self.cancelled = False  # the caller gave up (deadline, cancel): do not run it any more

    def reply(self, status: Any) -> None:
        if not self.done:
            self.status = status
            self.done = True  # written before _event is read: see wait()
            ev = self._event
            if ev is not None:
                ev.set()

    def wait(self, timeout: float) -> bool:
        if self.done:  # run inline, or already finished: no Event to build (it costs ~4 us)
            return True
        # _event is published before done is read; reply() writes done before reading _event, so one
        # of the two sides always sees the other (CPython runs bytecodes one at a time)
        ev = self._event = threading.Event()
        if self.done:
            return True
        return ev.wait(timeout)

    def fail(self, exception_type: str, message: str) -> None:
        self.reply({"success": False, "result": None, "exception_type": exception_type,
                    "exception_msg": message, "exception": f"{exception_type}: {message}"})


class LocalQueue:
    """The bounded buffer of one queue. Items are ``(envelope_dict, PendingCall or None)``."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        # ``cond`` waits/notifies on ``_mutex``; paths that never wait take ``_mutex`` directly (a C-level
        # ``with``, where ``with cond`` goes through Python-level Condition.__enter__/__exit__)
        self._mutex = threading.Lock()
        self.cond = threading.Condition(self._mutex)
        self.ready: deque = deque()
        self.in_flight: dict[int, tuple[dict, Optional[PendingCall]]] = {}
        self._seq = 0
        self.refs = 0  # brokers of this process that registered it
        self.inline: Optional[InlineRunner] = None  # set when an engine consumer runs this queue

    def offer(self, items: list[tuple[dict, Optional[PendingCall]]]) -> int:
        """Append as many items as fit; return how many."""
        with self.cond:
            room = self.capacity - len(self.ready)
            if room <= 0:
                return 0
            taken = items if len(items) <= room else items[:room]
            self.ready.extend(taken)
            self.cond.notify(len(taken))
            return len(taken)

    def put_evicting(self, item: tuple[dict, Optional[PendingCall]]) -> None:
        """Append even when full, dropping the oldest (dead letters must never block the consumer)."""
        with self.cond:
            if len(self.ready) >= self.capacity:
                dropped = self.ready.popleft()
                logger.warning("grpc dead-letter buffer %r is full; dropped the oldest message %s",
                               self.name, (dropped[0].get("extra") or {}).get("task_id"))
            self.ready.append(item)
            self.cond.notify()

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = None
        out: list[Delivery] = []
        with self.cond:
            while True:
                while self.ready and len(out) < max_count:
                    body, pending = self.ready.popleft()
                    if pending is not None and pending.cancelled:
                        continue  # its caller is gone: running it would be wasted work
                    self._seq += 1
                    tag = self._seq
                    self.in_flight[tag] = (body, pending)
                    out.append(Delivery(body=body, tag=tag,
                                        reply=pending.reply if pending is not None else None))
                if out:
                    return out
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                self.cond.wait(remaining)

    def track(self, body: dict, pending: Optional[PendingCall]) -> Delivery:
        """Register a delivery that is run without passing through the buffer (see InlineRunner)."""
        with self._mutex:
            self._seq += 1
            tag = self._seq
            self.in_flight[tag] = (body, pending)
        return Delivery(body=body, tag=tag, reply=pending.reply if pending is not None else None)

    def finish(self, tags: list[Any], failure: Optional[tuple[str, str]] = None) -> None:
        """ack/reject: forget these deliveries. A call whose result was never reported gets ``failure``."""
        with self._mutex:
            entries = [self.in_flight.pop(t, None) for t in tags]
        for e in entries:
            if e is not None and e[1] is not None and not e[1].done:
                e[1].fail(*(failure or ("NoResult", "the consumer finished the task without reporting a result")))

    def requeue(self, tags: list[Any]) -> None:
        with self.cond:
            n = 0
            for t in tags:
                e = self.in_flight.pop(t, None)
                if e is not None:
                    self.ready.append(e)
                    n += 1
            if n:
                self.cond.notify(n)

    def purge(self) -> int:
        with self.cond:
            dropped = list(self.ready)
            self.ready.clear()
        for _, pending in dropped:
            if pending is not None:
                pending.fail("Purged", f"queue {self.name!r} was purged before the call ran")
        return len(dropped)

    def counts(self) -> tuple[int, int]:
        with self._mutex:
            return len(self.ready), len(self.in_flight)


def _abort_backpressure(context: grpc.ServicerContext, queue: str) -> None:
    context.set_trailing_metadata(((BACKPRESSURE_TRAILER, "1"),))
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the buffer of queue {queue!r} on this consumer is full")


def _parse_envelope(body: str, context: grpc.ServicerContext, index: int = 0) -> dict:
    try:
        obj = _fast_loads(body)  # orjson: ~5x cheaper than json.loads on the hot path
    except ValueError:
        obj = _lenient_loads(body, context, index)
    if type(obj) is dict:
        return obj
    if not isinstance(obj, dict):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"body #{index} is not a JSON object (the funboost envelope), got {type(obj).__name__}")
    return obj


def _lenient_loads(body: str, context: grpc.ServicerContext, index: int) -> Any:
    # json accepts what orjson refuses (NaN, Infinity, lone surrogates): only then is the body invalid
    try:
        return json.loads(body)
    except ValueError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"body #{index} is not valid JSON: {exc}")


# the fields of FunctionResultStatus a caller needs; dataclasses.asdict of the whole record costs more
# than the rest of the reply path
_STATUS_FIELDS = ("task_id", "success", "result", "exception_type", "exception_msg", "run_times", "run_status",
                  "time_cost", "host", "pid")


_status_values = operator.attrgetter(*_STATUS_FIELDS)


def status_to_json(status: Any) -> str:
    if type(status) is dict:
        d = status
    else:
        try:  # a FunctionResultStatus (slotted record): the common case, tried first
            d = dict(zip(_STATUS_FIELDS, _status_values(status)))
        except AttributeError:
            if isinstance(status, dict):
                d = status
            elif hasattr(status, "exception_type"):  # a status-like object without some of the fields
                d = {k: getattr(status, k, None) for k in _STATUS_FIELDS}
            else:
                d = {"success": True, "result": status}
    # core's encoder for state records: orjson (values JSON cannot hold become their repr), json fallback
    return dumps_state(d)


class InlineRunner:
    """Runs ``Call`` requests in the gRPC handler thread through the engine's ``execute_inline`` (one
    thread hop fewer than buffer -> fetch -> pool -> reply). At most ``limit`` at once; beyond that, or
    while the consumer is paused or stopping, calls go through the buffer like any message."""

    def __init__(self, consumer: Any, limit: int) -> None:
        self.consumer = consumer
        self.limit = limit
        self.running = 0
        # a counter under a plain lock: threading.(Bounded)Semaphore is pure Python around a Condition and
        # cost several us per call
        self._lock = threading.Lock()

    def try_run(self, queue: "LocalQueue", body: dict, pending: PendingCall) -> bool:
        c = self.consumer
        # plain attribute + property of the engine Consumer (broker.run_consumer only builds an InlineRunner
        # for one); a stopping consumer's execute_inline would return without settling the call
        if c.paused or c.stopped:
            return False
        lock = self._lock
        with lock:
            if self.running >= self.limit:
                return False
            self.running += 1
        try:
            d = queue.track(body, pending)
            try:
                c.execute_inline(d)
            except Exception as exc:  # the runner records task errors itself; this is an engine failure
                logger.exception("funboost grpc: inline execution failed")
                pending.fail(type(exc).__name__, str(exc))
                queue.finish([d.tag])
            return True
        finally:
            with lock:
                self.running -= 1


class _Servicer(broker_pb2_grpc.FunboostBrokerServicer):
    def __init__(self, host: "ServerHost") -> None:
        self._host = host

    def _queue(self, name: str, context: grpc.ServicerContext) -> LocalQueue:
        q = self._host.queues.get(name)
        if q is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"this consumer does not host queue {name!r}")
        return q

    def Publish(self, request, context):  # noqa: N802 (gRPC method name)
        q = self._queue(request.queue_name, context)
        items = [(_parse_envelope(b, context, i), None) for i, b in enumerate(request.bodies)]
        if not items:
            return broker_pb2.PublishReply(accepted=0)
        accepted = q.offer(items)
        if accepted == 0:
            _abort_backpressure(context, q.name)
        return broker_pb2.PublishReply(accepted=accepted)

    def Call(self, request, context):  # noqa: N802
        # the hot path of sync_call: kept flat (each Python call costs several us in situ under load)
        q = self._host.queues.get(request.queue_name)
        if q is None:
            self._queue(request.queue_name, context)  # aborts with NOT_FOUND
        body = _parse_envelope(request.body, context)
        pending = PendingCall()
        inline = q.inline
        if inline is None or not inline.try_run(q, body, pending):
            if not q.offer([(body, pending)]):
                _abort_backpressure(context, q.name)
        if not pending.done:  # run inline, it is already done: no deadline arithmetic, no Event
            remaining = context.time_remaining()
            if remaining is None or remaining > self._host.max_call_wait:
                remaining = self._host.max_call_wait
            if not pending.wait(remaining):
                pending.cancelled = True
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the task did not finish before the deadline")
        return _CallReply(status_json=status_to_json(pending.status))

    def Stats(self, request, context):  # noqa: N802
        q = self._queue(request.queue_name, context)
        ready, in_flight = q.counts()
        return broker_pb2.StatsReply(ready=ready, in_flight=in_flight, capacity=q.capacity)

    def Purge(self, request, context):  # noqa: N802
        return broker_pb2.PurgeReply(purged=self._queue(request.queue_name, context).purge())


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


def _server_key(options: GrpcOptions) -> tuple:
    return (options.token, options.tls_cert_file, options.tls_key_file, options.max_message_bytes,
            options.server_threads, options.health_requires_token)


class ServerHost:
    """One started gRPC server and the queues it hosts."""

    max_call_wait = 24 * 3600.0  # a Call without a deadline still ends one day

    def __init__(self, options: GrpcOptions) -> None:
        self.key = _server_key(options)
        self.queues: dict[str, LocalQueue] = {}
        self.health = health.HealthServicer(experimental_non_blocking=True)
        max_bytes = options.max_message_bytes
        grpc_options = [
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", -1),
            # a second process on the same port must fail to bind, not share the port silently
            ("grpc.so_reuseport", 0),
        ]
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
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info("funboost grpc consumer listening on %s%s", self.address, " (TLS)" if options.tls_cert_file else "")

    def register(self, name: str, capacity: int) -> LocalQueue:
        q = self.queues.get(name)
        if q is None:
            q = LocalQueue(name, capacity)
            self.queues = {**self.queues, name: q}  # copy-on-write: handlers read without a lock
        q.refs += 1
        self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return q

    def unregister(self, name: str) -> bool:
        """Drop one reference to ``name``; return True when the server hosts nothing any more."""
        q = self.queues.get(name)
        if q is not None:
            q.refs -= 1
            if q.refs <= 0:
                self.queues = {k: v for k, v in self.queues.items() if k != name}
                self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
                with q.cond:
                    left = list(q.ready) + list(q.in_flight.values())
                    q.ready.clear()
                lost = 0
                for body, pending in left:
                    if pending is not None:
                        pending.fail("ConsumerClosed", f"the consumer of queue {name!r} stopped")
                    else:
                        lost += 1
                if lost:
                    logger.warning("funboost grpc: consumer of %r closed with %d accepted message(s) not run; "
                                   "they are lost (the grpc kind is not persistent)", name, lost)
        return not self.queues

    def stop(self, grace: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1.0)


_hosts: dict[tuple[str, int], ServerHost] = {}
_hosts_lock = threading.Lock()


def acquire_queue(options: GrpcOptions, queue_name: str) -> tuple[ServerHost, LocalQueue]:
    """Start (once per host/port and process) the server and register ``queue_name`` on it."""
    with _hosts_lock:
        key = (options.host, options.port)
        host = _hosts.get(key) if options.port else None
        if host is not None and host.key != _server_key(options):
            raise ValueError(f"a funboost grpc server already listens on {options.host}:{options.port} in this "
                             "process with other security/size options; use another port")
        if host is None:
            host = ServerHost(options)
            _hosts[(options.host, host.port)] = host
            if options.port == 0:
                _hosts[key] = host  # port 0: brokers sharing these options share this server
        return host, host.register(queue_name, options.buffer_size)


def local_queue(options: GrpcOptions, queue_name: str) -> Optional[LocalQueue]:
    """The buffer of ``queue_name`` if this process hosts it on the server of these options."""
    host = _hosts.get((options.host, options.port))
    return host.queues.get(queue_name) if host is not None else None


def release_queue(host: ServerHost, queue_name: str) -> None:
    with _hosts_lock:
        if host.unregister(queue_name):
            for k in [k for k, v in _hosts.items() if v is host]:
                del _hosts[k]
            stop = True
        else:
            stop = False
    if stop:
        host.stop()
