"""The consumer side: one TCP server per (host, port) and process.
The queues it hosts, their buffers and the request handling are core's
(:class:`funboost.transport.server.QueueServer`); this module and :mod:`funboost_tcp.threaded` are the
framing: frames in and out, the token, the size limit, TLS, and per-connection backpressure.

Plain TCP is served by one polling thread that runs calls itself (:mod:`funboost_tcp.threaded`; a monitor
hands the polling to another thread when a call or a write holds it): no thread hand-off per call. TLS connections are
served by an asyncio server on a loop thread of its own (one ``SSLSocket`` must not be used by two threads
at once): ``CALL`` requests block until the function finished, so they run in handler threads
(``call_threads``); ``PUBLISH``, ``STATS``, ``PURGE`` and ``PING`` only touch the in-process buffer and run
on the loop. Both check requests and run calls with the same code (:meth:`TcpServer._request`,
:meth:`TcpServer._call_reply`).

Per connection, the server reads the next frame only while fewer than ``max_in_flight_per_connection``
of its requests are under way (and, TLS, its unsent replies stay under :data:`WRITE_HIGH_WATER`): a client
that sends faster than the consumer answers is slowed down by TCP flow control instead of growing the
server's memory.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import deque
from typing import Any, Callable, Optional

from funboost.message import dumps, loads
from funboost.transport.handler_threads import HandlerThreads
from funboost.transport.errors import Backpressure, BadRequest, CallDeadlineExceeded, RequestError, UnknownQueue
from funboost.transport.loop_thread import LoopThread
from funboost.transport.security import require_token_for_bind, token_matches
from funboost.transport.server import QueueServer, ServerRegistry
from funboost.transport.tls import server_ssl_context
from funboost_tcp import protocol as p
from funboost_tcp.options import TcpOptions
from funboost_tcp import threaded
from funboost_tcp.threaded import ThreadedListener

logger = logging.getLogger("funboost.tcp")

#: bytes of unsent replies on one connection above which the server stops reading its requests
WRITE_HIGH_WATER = 1024 * 1024
_DISCARD_CHUNK = 64 * 1024
_HEADER = p.HEADER
_pack = _HEADER.pack
_OK, _ERROR = p.OK, p.ERROR


def _error_frame(request_id: int, code: str, message: str) -> bytes:
    return p.frame(request_id, _ERROR, dumps({"code": code, "message": message}).encode())


def _code_of(err: RequestError) -> str:
    if isinstance(err, UnknownQueue):
        return p.NOT_FOUND
    if isinstance(err, Backpressure):
        return p.BACKPRESSURE
    if isinstance(err, BadRequest):
        return p.BAD_REQUEST
    if isinstance(err, CallDeadlineExceeded):
        return p.DEADLINE_EXCEEDED
    return p.INTERNAL


class _Refused(Exception):
    """A request refused by the framing (before any handler): its error code and text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Connection:
    """One accepted connection: its writer, its requests under way, and the replies of call threads.

    A call thread writes its reply straight to the socket (a duplicate of the connection's descriptor) when
    nothing is waiting to be written before it: no wake-up of the loop, whose hop back cost a thread
    switch per call. Otherwise (a partial write, earlier bytes still buffered, TLS) the reply goes to the
    loop, coalesced with the others ready at that moment (one wake-up for all of them). Every write, the
    loop's included, happens under ``lock``, so frames never interleave."""

    __slots__ = ("writer", "transport", "loop", "lock", "sock", "closed", "in_flight", "limit", "room", "waiting",
                 "outbox", "flush_scheduled")

    def __init__(self, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.loop = loop
        self.lock = threading.Lock()
        self.sock: Optional[socket.socket] = None
        if writer.get_extra_info("sslcontext") is None:
            raw = writer.get_extra_info("socket")
            if raw is not None:
                self.sock = raw.dup()  # the same socket; closed with the connection
                self.sock.setblocking(False)  # never wait in send() under the lock (whatever the default timeout)
        self.closed = False
        self.in_flight = 0  # under lock: call threads decrement it
        self.limit = limit
        self.room = asyncio.Event()
        self.room.set()
        self.waiting = False  # the reading coroutine waits for room
        self.outbox: deque[bytes] = deque()
        self.flush_scheduled = False

    def write(self, data: bytes) -> None:
        """On the loop: write a reply."""
        with self.lock:
            if not self.closed and not self.transport.is_closing():
                self.transport.write(data)

    def call_started(self) -> bool:
        """On the loop: one more call under way; True if the connection has no room for another."""
        with self.lock:
            self.in_flight += 1
            if self.in_flight < self.limit:
                return False
            self.room.clear()
            self.waiting = True
            return True

    def reply_threadsafe(self, data: bytes) -> None:
        """From a call thread: write the reply of a finished call (directly when nothing is ahead of it)."""
        with self.lock:
            self.in_flight -= 1
            wake_reader = self.waiting and self.in_flight < self.limit
            if wake_reader:
                self.waiting = False
            if self.closed:
                return
            sock = self.sock
            if (sock is not None and not self.flush_scheduled and not self.transport.get_write_buffer_size()
                    and not self.transport.is_closing()):
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:  # the connection is gone: its reading side notices and closes it
                    sent = len(data)
                if sent < len(data):
                    self.outbox.append(data[sent:] if sent else data)
                    self.flush_scheduled = True
                elif not wake_reader:
                    return
            else:
                self.outbox.append(data)
                if self.flush_scheduled and not wake_reader:
                    return  # the flush on its way writes it
                self.flush_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    def send_threadsafe(self, data: bytes) -> None:
        """From any thread: write a frame through the loop without settling a call (a deadline reply: its
        call still runs and keeps its place in ``in_flight`` until :meth:`reply_threadsafe`)."""
        with self.lock:
            if self.closed:
                return
            self.outbox.append(data)
            if self.flush_scheduled:
                return
            self.flush_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    def flush(self) -> None:
        """On the loop: write the replies call threads could not write themselves; wake the reader."""
        with self.lock:
            self.flush_scheduled = False
            box = self.outbox
            n = len(box)
            if n and not self.closed and not self.transport.is_closing():
                self.transport.write(box.popleft() if n == 1 else b"".join([box.popleft() for _ in range(n)]))
            box.clear()
            room = not self.waiting
        if room:
            self.room.set()

    def close(self) -> None:
        """On the loop, when the connection ends: no call thread writes to it any more."""
        with self.lock:
            self.closed = True
            sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def server_key(options: TcpOptions) -> tuple:
    """The options two brokers must agree on to share one server."""
    return (options.token, options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file,
            options.max_frame_bytes, options.call_threads, options.max_in_flight_per_connection)


class TcpServer(QueueServer):
    """One listening server (threads for plain TCP, asyncio for TLS) and the queues it hosts.

    :raises InsecureBind: (a ``ValueError``) a non-loopback ``host`` without a token or client certificates.
    :raises OSError: it cannot listen (port in use…)."""

    def __init__(self, options: TcpOptions) -> None:
        require_token_for_bind("tcp", options.host, options.token, tls_client_auth=bool(options.tls_client_ca_file))
        super().__init__(server_key(options))
        self.options = options
        self._token: Optional[bytes] = options.token.encode() if options.token else None
        self._max_frame = options.max_frame_bytes
        self._limit = options.max_in_flight_per_connection
        ssl_ctx = (server_ssl_context(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file)
                   if options.tls_cert_file and options.tls_key_file else None)
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._connections: dict[asyncio.StreamWriter, "asyncio.Task[None]"] = {}
        self._threaded: Optional[ThreadedListener] = None
        try:
            if ssl_ctx is None and threaded.AVAILABLE:  # plain TCP: a polling thread that runs calls itself
                self._threaded = ThreadedListener(
                    options.host, options.port, request=self._request, call_reply=self._call_reply,
                    too_large=self._too_large, max_frame=self._max_frame, limit=self._limit,
                    call_threads=options.call_threads, name=f"funboost-tcp-{options.host}:{options.port}")
                self.port = self._threaded.port
            else:
                self._start_asyncio(ssl_ctx)
        except OSError as exc:
            raise OSError(exc.errno, f"funboost tcp: cannot listen on "
                                     f"{_bind_address(options.host, options.port)}: {exc.strerror or exc} "
                                     "(port in use?)") from exc
        self.address = _bind_address(options.host, self.port)
        logger.info("funboost tcp consumer listening on %s%s", self.address, " (TLS)" if ssl_ctx else "")

    def _start_asyncio(self, ssl_ctx: Any) -> None:
        """TLS: one ``SSLSocket`` must not be read and written by two threads at once, so TLS connections are
        served by an asyncio server on a loop thread, with calls run in handler threads."""
        options = self.options
        self._pool = HandlerThreads(options.call_threads, "funboost-tcp-call")
        self._loop_thread = LoopThread(f"funboost-tcp-server-{options.host}:{options.port}")
        self.loop = self._loop_thread.loop
        try:
            self._server = self._loop_thread.run(asyncio.start_server(
                self._serve_connection, options.host, options.port, ssl=ssl_ctx, backlog=1024,
                limit=2 * _DISCARD_CHUNK), timeout=30)
        except BaseException:
            self._loop_thread.stop()
            self._pool.shutdown()
            raise
        self.port = self._server.sockets[0].getsockname()[1]

    def _too_large(self, request_id: int, length: int) -> bytes:
        return _error_frame(request_id, p.TOO_LARGE, f"frame of {length} bytes exceeds max_frame_bytes={self._max_frame}")

    # ------------------------------------------------------------------ connections (on the loop)
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer, self.loop, self._limit)
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        transport = writer.transport
        unpack, max_frame, readexactly = _HEADER.unpack, self._max_frame, reader.readexactly
        try:
            while True:
                try:
                    head = await readexactly(p.HEADER_SIZE)
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection (between frames, or mid-frame)
                length, request_id, frame_type = unpack(head)
                if length > max_frame:
                    conn.write(self._too_large(request_id, length))
                    # skip its payload without holding it: the next frame starts after it
                    remaining = length
                    while remaining:
                        chunk = await reader.read(min(remaining, _DISCARD_CHUNK))
                        if not chunk:
                            return
                        remaining -= len(chunk)
                else:
                    payload = await readexactly(length) if length else b""
                    self._dispatch(conn, request_id, frame_type, payload)
                # per-connection backpressure: read on only when this connection has room
                if not conn.room.is_set():
                    await conn.room.wait()
                if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            logger.debug("funboost tcp: connection dropped: %r", exc)
        except asyncio.CancelledError:
            # stop() cancels the connections: end normally (on 3.11, asyncio's stream callback would log the
            # cancellation of a connection task as an error)
            pass
        finally:
            self._connections.pop(writer, None)
            conn.close()
            writer.close()

    def _dispatch(self, conn: _Connection, request_id: int, frame_type: int, payload: bytes) -> None:
        """On the loop (TLS): answer one request frame (a CALL is handed to the pool and answered from there)."""
        out = self._request(request_id, frame_type, payload)
        if type(out) is bytes:
            conn.write(out)
            return
        conn.call_started()
        self._pool.submit(self._run_call, conn, request_id, *out)

    def _request(self, request_id: int, frame_type: int, payload: Any) -> Any:
        """Check and answer one request frame: the reply frame (bytes), or for a valid CALL the
        ``(queue, body, timeout)`` to run (the framing decides where)."""
        try:
            try:
                req = loads(payload)
            except ValueError as exc:
                raise _Refused(p.BAD_REQUEST, f"frame payload is not valid JSON: {exc}") from None
            if type(req) is not dict:
                raise _Refused(p.BAD_REQUEST, "frame payload must be a JSON object")
            if self._token is not None:
                token = req.get("token")
                if type(token) is not str or not token_matches(token, self._token):
                    raise _Refused(p.UNAUTHENTICATED, "missing or invalid token")
            queue = req.get("queue")
            if frame_type == p.CALL:
                body, timeout = req.get("body"), req.get("timeout")
                if type(queue) is not str:
                    raise _Refused(p.BAD_REQUEST, "'queue' must be a string")
                if type(body) is not dict:
                    raise _Refused(p.BAD_REQUEST, "'body' must be a JSON object (the funboost envelope)")
                if timeout is not None and (type(timeout) not in (int, float) or timeout < 0):
                    raise _Refused(p.BAD_REQUEST, "'timeout' must be a number of seconds >= 0 or null")
                return queue, body, timeout
            if frame_type == p.PING:
                if queue is not None and type(queue) is not str:
                    raise _Refused(p.BAD_REQUEST, "'queue' must be a string")
                reply: Any = {"serving": not self._stopped and (queue is None or queue in self.queues)}
            elif frame_type in p.REQUEST_TYPES:
                if type(queue) is not str:
                    raise _Refused(p.BAD_REQUEST, "'queue' must be a string")
                if frame_type == p.PUBLISH:
                    bodies = req.get("bodies")
                    if type(bodies) is not list or not all(type(b) is dict for b in bodies):
                        raise _Refused(p.BAD_REQUEST, "'bodies' must be a list of JSON objects (funboost envelopes)")
                    reply = {"accepted": self.handle_publish(queue, bodies)}
                elif frame_type == p.STATS:
                    ready, in_flight, capacity = self.stats(queue)
                    reply = {"ready": ready, "in_flight": in_flight, "capacity": capacity}
                else:
                    reply = {"purged": self.purge(queue)}
            else:
                raise _Refused(p.BAD_REQUEST, f"unknown frame type {frame_type}")
            return p.frame(request_id, _OK, dumps(reply).encode())
        except _Refused as err:
            return _error_frame(request_id, err.code, str(err))
        except RequestError as err:
            return _error_frame(request_id, _code_of(err), str(err))
        except Exception as exc:  # a bug must cost one request, never the connection
            logger.exception("funboost tcp: request failed")
            return _error_frame(request_id, p.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _call_reply(self, request_id: int, queue: str, body: dict, timeout: Optional[float],
                    send: Optional[Callable[[bytes], None]] = None) -> Optional[bytes]:
        """Run one call (inline in the engine when the consumer allows) and return its reply frame; None
        when the call outlived its deadline and ``send`` (a thread-safe write to its connection) already
        carried the ``DEADLINE_EXCEEDED`` reply."""
        try:
            if send is None:
                status = self.handle_call(queue, body, timeout)
            else:
                status = self.handle_call(queue, body, timeout, lambda: send(_error_frame(
                    request_id, p.DEADLINE_EXCEEDED, f"the task did not finish within the call's timeout of "
                    f"{timeout}s (it still runs on the consumer; its result is dropped)")))
                if status is None:
                    return None
            payload = status.encode()  # type: ignore[union-attr]  (None only with send)
            return _pack(len(payload), request_id, _OK) + payload
        except RequestError as err:
            return _error_frame(request_id, _code_of(err), str(err))
        except Exception as exc:
            logger.exception("funboost tcp: call failed")
            return _error_frame(request_id, p.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _run_call(self, conn: _Connection, request_id: int, queue: str, body: dict, timeout: Optional[float]) -> None:
        """In a pool thread (TLS): run the call and hand the reply to the loop."""
        conn.reply_threadsafe(self._call_reply(request_id, queue, body, timeout, conn.send_threadsafe) or b"")

    # ------------------------------------------------------------------ lifecycle
    @property
    def connection_count(self) -> int:
        return self._threaded.connection_count if self._threaded is not None else len(self._connections)

    def stop(self, grace: float = 1.0) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._threaded is not None:
            self._threaded.stop(grace)
            logger.info("funboost tcp consumer on %s stopped", self.address)
            return

        async def close() -> None:
            self._server.close()
            tasks = list(self._connections.values())
            for t in tasks:  # a connection may wait for room (backpressure) or for its next frame
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=grace)

        try:
            self._loop_thread.run(close(), timeout=grace + 1.0)
        except Exception:  # noqa: BLE001 - best effort: the loop stops below
            logger.debug("funboost tcp: server %s did not close cleanly", self.address, exc_info=True)
        self._loop_thread.stop()
        self._pool.shutdown()
        logger.info("funboost tcp consumer on %s stopped", self.address)


#: the tcp servers of this process, one per (host, port)
registry: ServerRegistry[TcpServer] = ServerRegistry("tcp")
