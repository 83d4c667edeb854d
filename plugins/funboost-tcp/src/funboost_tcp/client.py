"""The publisher side: one multiplexed connection per consumer address. Balancing, failover, backoff and
probing of addresses marked down are core's (:class:`funboost.transport.client.TransportClient`); this
module is the framing: frames out, replies matched to their requests by id, error frames mapped to
attempt outcomes.

Plain TCP (:class:`_SocketConnection`): a calling thread writes its frame itself and, unless another
caller is already reading, reads the replies itself (leader/follower); many threads share one
connection. TLS (:class:`_LoopConnection`): a calling thread encodes its frame, hands it to a loop thread
of the plugin's own (``call_soon_threadsafe``) and waits on a lock that the loop releases when the reply
with its request id arrives.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from typing import Any, Callable, Optional, Union

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
#: frames up to this size leave in one write (header and payload copied together)
_ONE_WRITE_MAX = 64 * 1024
_READ_SIZE = p.READ_SIZE


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


def _never_readable(timeout: float) -> bool:
    return False


def _readable(sock: socket.socket) -> Callable[[float], bool]:
    """A function that waits up to ``timeout`` seconds for ``sock`` to have bytes (or EOF) to read."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return lambda timeout: bool(poller.poll(timeout * 1000.0))
    return lambda timeout: bool(select.select([sock], [], [], timeout)[0])  # no poll() (Windows)


class _Caller(_Waiter):
    """A caller of :class:`_SocketConnection` waiting for its reply, or to be asked to read for everybody.
    Its fields change under the connection's lock; ``lock`` is released once per wake-up."""

    __slots__ = ("finished", "signalled")

    def __init__(self) -> None:
        super().__init__()
        self.finished = False  # replied or failed
        self.signalled = False  # lock released and not yet taken back by the caller

    def wake(self) -> None:
        """Under the connection's lock."""
        if not self.signalled:
            self.signalled = True
            self.lock.release()


class _SocketConnection:
    """A plain (non-TLS) connection to one consumer without a loop thread: each calling thread writes its
    own frame and one of the waiting callers reads the replies for all of them (leader/follower).

    A lone caller therefore does what a hand-written blocking client does (send, then read its reply in
    its own thread): no hand-off to a loop thread and back, which cost two thread wake-ups per call. With
    several callers, the reader hands each reply to its caller (one wake-up, as with a loop thread) and,
    when its own reply has come, passes the reading on to another waiting caller. Requests from all
    threads are multiplexed on the one connection by request id, as before.

    TLS connections use :class:`_LoopConnection`: one ``SSLSocket`` must not be read and written by two
    threads at once.
    """

    def __init__(self, client: "TcpClient", address: str) -> None:
        self.client = client
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.lock = threading.Lock()  # guards everything below but rbuf
        self.write_lock = threading.Lock()  # one frame at a time on the socket
        self.sock: Optional[socket.socket] = None
        self.readable: Callable[[float], bool] = _never_readable  # waits up to n seconds for bytes to read
        self.pending: dict[int, _Caller] = {}
        self.reader: Optional[_Caller] = None  # the caller reading for everybody, if any
        self.ids = itertools.count(1)
        self.rbuf = bytearray()  # bytes read and not yet parsed (only the reader touches it)
        self.max_frame = client.options.max_frame_bytes

    # ------------------------------------------------------------------ a request
    def request(self, frame_type: int, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one request and wait for its reply: ``(OK or ERROR, payload)``.

        :raises EndpointUnreachable: cannot connect (``maybe_processed`` False), or the connection broke
            after the request was sent (True). :raises AttemptTimedOut: no reply within ``timeout``."""
        deadline = time.monotonic() + timeout
        w = _Caller()
        with self.lock:
            sock = self.sock
            if sock is not None and not self.pending and self.readable(0):
                # nothing is due from the consumer, yet the socket is readable: it closed the connection
                # (stopped, killed, restarted). Reconnect before sending rather than lose this request.
                self._discard(sock)
                sock = None
            if sock is None:
                sock = self._connect(timeout)  # raises EndpointUnreachable
            request_id = next(self.ids) & 0xFFFFFFFF
            self.pending[request_id] = w
        header = _pack(len(payload), request_id, frame_type)
        try:
            with self.write_lock:
                if len(payload) <= _ONE_WRITE_MAX:
                    sock.sendall(header + payload)
                else:  # no copy of a large batch
                    sock.sendall(header)
                    sock.sendall(payload)
        except OSError as exc:
            with self.lock:
                self.pending.pop(request_id, None)
            self._drop(sock, f"send failed: {exc}")
            # an incomplete frame is never handled by the consumer
            raise EndpointUnreachable(f"{self.address}: UNAVAILABLE: connection lost ({exc})", "UNAVAILABLE",
                                      maybe_processed=False) from None
        return self._wait(w, request_id, sock, deadline, timeout)

    def _wait(self, w: _Caller, request_id: int, sock: socket.socket, deadline: float,
              timeout: float) -> tuple[int, bytes]:
        while True:
            with self.lock:
                if w.finished:
                    break
                lead = self.reader is None and self.sock is sock
                if lead:
                    self.reader = w
            if lead:
                self._read(w, sock, deadline)
                if w.finished:
                    break
            else:
                remaining = deadline - time.monotonic()
                if remaining > 0 and w.lock.acquire(timeout=remaining):
                    with self.lock:
                        w.signalled = False
                    continue  # replied, failed, or asked to read for everybody
            # the deadline passed
            with self.lock:
                if w.finished:
                    break
                self.pending.pop(request_id, None)
                if w.signalled:  # a hand-over of the reading that came too late: pass it on
                    w.lock.acquire()
                    w.signalled = False
                    self._hand_over()
            raise AttemptTimedOut(f"{self.address}: DEADLINE_EXCEEDED: no reply within {timeout:.3g}s",
                                  p.DEADLINE_EXCEEDED)
        if w.signalled:  # consume the wake-up meant for it (it found the reply itself)
            w.lock.acquire()
        if w.error is not None:
            raise w.error
        return w.frame_type, w.payload

    # ------------------------------------------------------------------ reading for everybody
    def _read(self, me: _Caller, sock: socket.socket, deadline: float) -> None:
        """As the reader: read and dispatch replies until ``me`` has its reply, the deadline passes or the
        connection breaks; then let another waiting caller read."""
        buf, readable, unpack, size = self.rbuf, self.readable, _HEADER.unpack_from, p.HEADER_SIZE
        try:
            while True:
                # dispatch every complete frame already read
                while len(buf) >= size:
                    length, request_id, frame_type = unpack(buf)
                    if length > self.max_frame:
                        raise ConnectionError(f"reply of {length} bytes exceeds max_frame_bytes={self.max_frame}")
                    end = size + length
                    if len(buf) < end:
                        break
                    payload = bytes(buf[size:end])
                    del buf[:end]
                    with self.lock:
                        w = self.pending.pop(request_id, None)  # None: its caller gave up
                        if w is not None:
                            w.frame_type, w.payload, w.finished = frame_type, payload, True
                            if w is not me:
                                w.wake()
                if me.finished:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not readable(remaining):
                    return
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    raise ConnectionError("closed by the consumer")
                buf += chunk
        except OSError as exc:  # ConnectionError included
            self._drop(sock, str(exc) or type(exc).__name__)
        finally:
            with self.lock:
                if self.reader is me:
                    self.reader = None
                    self._hand_over(me)

    def _hand_over(self, leaving: Optional[_Caller] = None) -> None:
        """Under ``lock``, with no reader: wake one waiting caller (not ``leaving``) to read, if any waits."""
        for w in self.pending.values():
            if w is not leaving and not w.finished:
                w.wake()
                return

    # ------------------------------------------------------------------ connection
    def _connect(self, timeout: float) -> socket.socket:
        """Under ``lock``: open the connection (callers wait for it anyway)."""
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=min(timeout, self.client.options.connect_timeout))
        except OSError as exc:
            raise EndpointUnreachable(f"{self.address}: UNAVAILABLE: cannot connect: {exc or type(exc).__name__}",
                                      "UNAVAILABLE", maybe_processed=False) from None
        sock.settimeout(None)  # blocking writes; the reader waits with poll() and its own deadline
        # a consumer that reads nothing for rpc_timeout breaks the connection rather than block a writer forever
        send_timeout = self.client.options.rpc_timeout
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(send_timeout), int(send_timeout % 1 * 1e6)))
        except OSError:  # a platform with another timeval layout: writes then wait as long as TCP does
            pass
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: never delay it
        self.readable = _readable(sock)
        self.sock = sock
        self.rbuf = bytearray()
        return sock

    def _discard(self, sock: socket.socket) -> None:
        """Under ``lock``, with nothing pending: forget a connection the consumer closed."""
        self.sock = None
        sock.close()

    def _drop(self, sock: socket.socket, reason: str) -> None:
        """The connection broke: every request sent on it fails (it may have reached the consumer)."""
        with self.lock:
            if self.sock is not sock:
                return  # already dropped (and maybe reconnected)
            self.sock = None
            pending = list(self.pending.values())
            self.pending.clear()
            err = EndpointUnreachable(f"{self.address}: UNAVAILABLE: connection lost ({reason})", "UNAVAILABLE",
                                      maybe_processed=True)
            for w in pending:
                w.error, w.finished = err, True
                w.wake()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        sock = self.sock
        if sock is not None:
            self._drop(sock, "closed by the publisher")


class _ConnectionPool:
    """Up to ``size`` plain connections to one consumer, shared by the process's calling threads.

    A request takes an idle connection (nothing under way on it), opens another while fewer than ``size``
    exist, and only then multiplexes on the least busy one. A caller alone on its connection reads its own
    reply, and the consumer runs a call that is alone on its connection in the thread that read it: with
    up to ``size`` threads calling at once, no call is handed from one thread to another on either side
    (8 threads on two cores: 1.3-1.5x the calls per second of one multiplexed connection, see
    docs/benchmarks.md). Beyond
    ``size`` threads, requests share connections (leader/follower, see :class:`_SocketConnection`)."""

    def __init__(self, client: "TcpClient", address: str, size: int) -> None:
        self.client = client
        self.address = address
        self.size = size
        self.lock = threading.Lock()
        self.connections: list[_SocketConnection] = []
        self.users: dict[_SocketConnection, int] = {}  # requests under way per connection
        self.idle: list[_SocketConnection] = []  # connections with no request under way (LIFO: warm first)

    def request(self, frame_type: int, payload: bytes, timeout: float) -> tuple[int, bytes]:
        with self.lock:
            if self.idle:
                conn = self.idle.pop()
            elif len(self.connections) < self.size:
                conn = _SocketConnection(self.client, self.address)
                self.connections.append(conn)
                self.users[conn] = 0
            else:
                conn = min(self.connections, key=self.users.__getitem__)
            self.users[conn] += 1
        try:
            return conn.request(frame_type, payload, timeout)
        finally:
            with self.lock:
                left = self.users[conn] = self.users[conn] - 1
                if not left:
                    self.idle.append(conn)

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()


class _LoopConnection:
    """A TLS connection to one consumer, driven by the client's loop thread; every method but
    :meth:`request` runs on the loop."""

    def __init__(self, client: "TcpClient", address: str) -> None:
        self.client = client
        assert client.loop is not None  # TLS clients have their loop thread
        self.loop_thread: LoopThread = client.loop
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
            self.loop_thread.call_soon(self.flush)
        if not w.lock.acquire(timeout=timeout):
            self.loop_thread.call_soon(self.pending.pop, request_id, None)
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
            self.loop_thread.loop.create_task(self._connect())

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
        self.loop_thread.loop.create_task(self._read_replies(reader, writer))

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

    def __init__(self, address: str, conn: Union[_ConnectionPool, _LoopConnection]) -> None:
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
    size_option = "max_frame_bytes"
    per_body_overhead = 1  # bodies are JSON objects in a JSON list: one comma each

    def __init__(self, options: TcpOptions) -> None:
        self.options = options
        self.ssl_context: Optional[ssl.SSLContext] = (
            client_ssl_context(options.tls_ca_file, options.tls_client_cert_file, options.tls_client_key_file)
            if options.client_tls else None)
        # TLS connections run on a loop thread (shared by the tcp clients of the process); plain ones need none
        self.loop: Optional[LoopThread] = shared_loop("funboost-tcp-client") if self.ssl_context is not None else None
        # every request starts with the same fields; the token is written once here
        self._prefix = b'{"token":' + dumps(options.token).encode() + b',"queue":'
        if self.ssl_context is not None:
            endpoints = [TcpEndpoint(a, _LoopConnection(self, a)) for a in options.target_addresses()]
        else:
            endpoints = [TcpEndpoint(a, _ConnectionPool(self, a, options.connections_per_consumer))
                         for a in options.target_addresses()]
        # room for the request's own fields around a body: the token prefix, the queue name (up to ~200 bytes
        # once JSON-escaped; a longer one can make a frame near the limit TOO_LARGE at the consumer) and
        # the call's ``"timeout"`` / ``"body"`` keys. A fixed KiB here used to refuse any message when
        # max_frame_bytes was at its minimum of 1 KiB.
        overhead = len(self._prefix) + 256
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

    def close_endpoint(self, ep: TcpEndpoint) -> None:
        if self.loop is None:
            ep.conn.close()
            return
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


# per process: connections and the loop thread must not cross a fork
_clients: ProcessLocalDict[tuple, TcpClient] = ProcessLocalDict()


def _client_key(options: TcpOptions) -> tuple:
    return (tuple(options.target_addresses()), options.token, options.client_tls, options.tls_ca_file,
            options.tls_client_cert_file, options.tls_client_key_file, options.tls_server_name,
            options.max_frame_bytes, options.publish_timeout, options.rpc_timeout, options.health_check_interval,
            options.connect_timeout, options.connections_per_consumer)


def get_client(options: TcpOptions) -> TcpClient:
    return _clients.get_or_create(_client_key(options), lambda: TcpClient(options))


def close_clients() -> None:
    """Close every connection this process opened to consumers (tests, interpreter shutdown)."""
    for c in _clients.clear():
        c.close()
