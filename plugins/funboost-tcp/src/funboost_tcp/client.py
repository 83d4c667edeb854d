"""The publisher side: one multiplexed connection per consumer address, driven by a loop thread of the
plugin's own (shared by every tcp client of the process). Balancing, failover, backoff and probing of
addresses marked down are core's (:class:`funboost.transport.client.TransportClient`); this module is the
framing: frames out, replies matched to their requests by id, error frames mapped to attempt outcomes.

A calling thread encodes its frame, hands it to the loop (``call_soon_threadsafe``) and waits on a lock
that the loop releases when the reply with its request id arrives; many threads share one connection.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
from collections import deque
from typing import Any, Optional, Union

from funboost.message import dumps, loads
from funboost.process_local import ProcessLocalDict
from funboost.transport.client import Endpoint, TransportClient
from funboost.transport.errors import AttemptFailed, AttemptTimedOut, EndpointRefused, EndpointUnreachable
from funboost.transport.loop_thread import LoopThread, shared_loop
from funboost.transport.tls import client_ssl_context
from funboost_tcp import protocol as p
from funboost_tcp.errors import MessageTooLarge, NoConsumerAvailable, RemoteTaskError, TcpBrokerError
from funboost_tcp.options import TcpOptions

logger = logging.getLogger("funboost.tcp")

_HEADER = p.HEADER
_pack = _HEADER.pack
_REFUSED = {p.NOT_FOUND, p.BACKPRESSURE}  # another consumer may take it


class _Waiter:
    """What a calling thread waits on: a lock held until the loop hands over the reply (or an error)."""

    __slots__ = ("lock", "frame_type", "payload", "error")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.frame_type = 0
        self.payload = b""
        self.error: Optional[AttemptFailed] = None

    def done(self, frame_type: int, payload: bytes) -> None:
        self.frame_type, self.payload = frame_type, payload
        self.lock.release()

    def fail(self, error: AttemptFailed) -> None:
        self.error = error
        self.lock.release()


class _Connection:
    """The connection to one consumer; every method but :meth:`request` runs on the loop."""

    def __init__(self, client: "TcpClient", address: str) -> None:
        self.client = client
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.writer: Optional[asyncio.StreamWriter] = None
        self.pending: dict[int, _Waiter] = {}
        self.queued: list[tuple[int, _Waiter, bytes]] = []
        self.connecting = False
        self.ids = itertools.count(1)
        # requests handed over by calling threads; one loop wake-up sends all that are there by then
        self.outbox: deque[tuple[int, _Waiter, bytes]] = deque()
        self.flush_scheduled = False

    # ------------------------------------------------------------------ from calling threads
    def request(self, frame_type: int, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one request and wait for its reply: ``(OK or ERROR, payload)``.

        :raises EndpointUnreachable: cannot connect (``maybe_processed`` False), or the connection broke
            after the request was sent (True). :raises AttemptTimedOut: no reply within ``timeout``."""
        w = _Waiter()
        request_id = next(self.ids) & 0xFFFFFFFF
        data = _pack(len(payload), request_id, frame_type) + payload
        self.outbox.append((request_id, w, data))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.client.loop.call_soon(self.flush)
        if not w.lock.acquire(timeout=timeout):
            self.client.loop.call_soon(self.pending.pop, request_id, None)
            raise AttemptTimedOut(f"{self.address}: DEADLINE_EXCEEDED: no reply within {timeout:.3g}s",
                                  p.DEADLINE_EXCEEDED)
        if w.error is not None:
            raise w.error
        return w.frame_type, w.payload

    # ------------------------------------------------------------------ on the loop
    def flush(self) -> None:
        self.flush_scheduled = False  # before draining: a request appended from now on schedules a flush
        box = self.outbox
        n = len(box)
        if not n:
            return
        batch = [box.popleft() for _ in range(n)]
        writer = self.writer
        if writer is not None and not writer.is_closing():
            pending = self.pending
            for request_id, w, _ in batch:
                pending[request_id] = w
            writer.write(batch[0][2] if n == 1 else b"".join([data for _, _, data in batch]))
            return
        self.queued.extend(batch)
        if not self.connecting:
            self.connecting = True
            self.client.loop.loop.create_task(self._connect())

    async def _connect(self) -> None:
        c = self.client
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=c.ssl_context, limit=2 * 65536,
                                        server_hostname=(c.options.tls_server_name or self.host)
                                        if c.ssl_context is not None else None),
                c.options.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            queued, self.queued, self.connecting = self.queued, [], False
            err = EndpointUnreachable(f"{self.address}: UNAVAILABLE: cannot connect: {exc or type(exc).__name__}",
                                      "UNAVAILABLE", maybe_processed=False)
            for _, w, _ in queued:
                w.fail(err)
            return
        self.writer, self.connecting = writer, False
        queued, self.queued = self.queued, []
        for request_id, w, data in queued:
            self.pending[request_id] = w
        writer.write(b"".join(data for _, _, data in queued))
        c.loop.loop.create_task(self._read_replies(reader, writer))

    async def _read_replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpack, readexactly, pending = _HEADER.unpack, reader.readexactly, self.pending
        max_frame = self.client.options.max_frame_bytes
        reason = "closed by the consumer"
        try:
            while True:
                length, request_id, frame_type = unpack(await readexactly(p.HEADER_SIZE))
                if length > max_frame:
                    reason = f"reply of {length} bytes exceeds max_frame_bytes={max_frame}"
                    break
                payload = await readexactly(length) if length else b""
                w = pending.pop(request_id, None)
                if w is not None:  # None: its caller gave up (timeout)
                    w.done(frame_type, payload)
        except asyncio.IncompleteReadError:
            pass
        except (OSError, ssl.SSLError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self._drop(writer, reason)

    def _drop(self, writer: asyncio.StreamWriter, reason: str) -> None:
        """The connection broke: every request sent on it fails (it may have reached the consumer)."""
        writer.close()
        if self.writer is writer:
            self.writer = None
        pending = list(self.pending.values())
        self.pending.clear()
        err = EndpointUnreachable(f"{self.address}: UNAVAILABLE: connection lost ({reason})", "UNAVAILABLE",
                                  maybe_processed=True)
        for w in pending:
            w.fail(err)

    def close(self) -> None:
        if self.writer is not None:
            self._drop(self.writer, "closed by the publisher")


class TcpEndpoint(Endpoint):
    __slots__ = ("conn",)

    def __init__(self, address: str, conn: _Connection) -> None:
        super().__init__(address)
        self.conn = conn


def _error_of(address: str, payload: bytes) -> Exception:
    """An ERROR reply as an attempt outcome (another consumer may do better) or the error that ends it."""
    try:
        e = loads(payload)
        code, message = str(e.get("code")), str(e.get("message"))
    except (ValueError, AttributeError):
        code, message = p.INTERNAL, repr(payload[:200])
    detail = f"{address}: {code}: {message}"
    if code in _REFUSED:
        return EndpointRefused(detail, code)
    if code == p.DEADLINE_EXCEEDED:
        return AttemptTimedOut(detail, code)
    if code == p.TOO_LARGE:
        return MessageTooLarge(f"tcp request to {address} refused: {message}", code=code)
    return TcpBrokerError(f"tcp request to {address} failed: {code}: {message}", code=code)


class TcpClient(TransportClient[TcpEndpoint]):
    error = TcpBrokerError
    no_consumer_error = NoConsumerAvailable
    too_large_error = MessageTooLarge
    remote_error = RemoteTaskError
    transport_name = "tcp"
    per_body_overhead = 1  # bodies are JSON objects in a JSON list: one comma each

    def __init__(self, options: TcpOptions) -> None:
        self.options = options
        self.loop: LoopThread = shared_loop("funboost-tcp-client")
        self.ssl_context: Optional[ssl.SSLContext] = (
            client_ssl_context(options.tls_ca_file, options.tls_client_cert_file, options.tls_client_key_file)
            if options.client_tls else None)
        # every request starts with the same fields; the token is written once here
        self._prefix = b'{"token":' + dumps(options.token).encode() + b',"queue":'
        endpoints = [TcpEndpoint(a, _Connection(self, a)) for a in options.target_addresses()]
        # room for the request's own fields around the bodies (queue names are short; 1 KiB is generous)
        overhead = 1024 + len(self._prefix)
        super().__init__(endpoints, max_body=options.max_frame_bytes - overhead,
                         max_message_bytes=options.max_frame_bytes, publish_timeout=options.publish_timeout,
                         health_check_interval=options.health_check_interval)

    def _payload(self, queue_name: str, rest: bytes = b"}") -> bytes:
        return self._prefix + dumps(queue_name).encode() + rest

    def _ok(self, ep: TcpEndpoint, frame_type: int, payload: bytes) -> bytes:
        if frame_type == p.OK:
            return payload
        raise _error_of(ep.address, payload)

    # ----------------------------------------------------------------- framing
    def send_publish(self, ep: TcpEndpoint, queue_name: str, bodies: list[str]) -> int:
        # the envelopes go in as JSON objects, not as escaped strings: no copy through an encoder, and the
        # frame size is the sum of their sizes
        payload = self._payload(queue_name, b',"bodies":[' + ",".join(bodies).encode() + b"]}")
        reply = self._ok(ep, *ep.conn.request(p.PUBLISH, payload, self.options.rpc_timeout))
        return int(loads(reply)["accepted"])

    def prepare_call(self, queue_name: str, body: str) -> Any:
        return queue_name, body.encode()

    def send_call(self, ep: TcpEndpoint, request: Any, timeout: float) -> Union[str, bytes]:
        queue_name, body = request
        # the consumer gets the deadline too: it skips the call if the caller gave up before it started
        payload = self._payload(queue_name, b',"timeout":' + dumps(round(timeout, 3)).encode() + b',"body":' + body + b"}")
        return self._ok(ep, *ep.conn.request(p.CALL, payload, timeout))

    def send_stats(self, ep: TcpEndpoint, queue_name: str) -> tuple[int, int]:
        reply = self._attempt(ep, p.STATS, self._payload(queue_name))
        return int(reply["ready"]), int(reply["in_flight"])

    def send_purge(self, ep: TcpEndpoint, queue_name: str) -> int:
        return int(self._attempt(ep, p.PURGE, self._payload(queue_name))["purged"])

    def _attempt(self, ep: TcpEndpoint, frame_type: int, payload: bytes) -> dict:
        """A STATS/PURGE: any failure only skips this consumer."""
        frame_type, reply = ep.conn.request(frame_type, payload, self.options.rpc_timeout)
        if frame_type != p.OK:
            err = _error_of(ep.address, reply)
            raise err if isinstance(err, AttemptFailed) else AttemptFailed(str(err), getattr(err, "code", None))
        return loads(reply)

    def probe(self, ep: TcpEndpoint, timeout: float) -> bool:
        return self.check_health(ep, timeout) == "SERVING"

    def close_endpoint(self, ep: TcpEndpoint) -> None:
        try:
            self.loop.call_soon(ep.conn.close)
        except RuntimeError:  # the loop is gone (interpreter shutdown)
            pass

    # ----------------------------------------------------------------- health
    def check_health(self, ep: TcpEndpoint, timeout: float, queue_name: Optional[str] = None) -> str:
        """``SERVING``, ``NOT_SERVING`` (up, not hosting ``queue_name``), ``UNAUTHENTICATED`` or
        ``UNREACHABLE``."""
        payload = b'{"token":' + dumps(self.options.token).encode() + (
            b',"queue":' + dumps(queue_name).encode() if queue_name is not None else b"") + b"}"
        try:
            frame_type, reply = ep.conn.request(p.PING, payload, timeout)
        except AttemptFailed:
            return "UNREACHABLE"
        if frame_type != p.OK:
            err = _error_of(ep.address, reply)
            return getattr(err, "code", None) or "UNREACHABLE"
        return "SERVING" if loads(reply).get("serving") else "NOT_SERVING"

    def health(self, queue_name: Optional[str] = None, timeout: float = 1.0) -> dict[str, str]:
        """``{address: status}`` for every address (for ``queue_name``, or the server when None)."""
        return {ep.address: self.check_health(ep, timeout, queue_name) for ep in self.endpoints}


# per process: connections and the loop thread must not cross a fork
_clients: ProcessLocalDict[tuple, TcpClient] = ProcessLocalDict()


def _client_key(options: TcpOptions) -> tuple:
    return (tuple(options.target_addresses()), options.token, options.client_tls, options.tls_ca_file,
            options.tls_client_cert_file, options.tls_client_key_file, options.tls_server_name,
            options.max_frame_bytes, options.publish_timeout, options.rpc_timeout, options.health_check_interval,
            options.connect_timeout)


def get_client(options: TcpOptions) -> TcpClient:
    return _clients.get_or_create(_client_key(options), lambda: TcpClient(options))


def close_clients() -> None:
    """Close every connection this process opened to consumers (tests, interpreter shutdown)."""
    for c in _clients.clear():
        c.close()
