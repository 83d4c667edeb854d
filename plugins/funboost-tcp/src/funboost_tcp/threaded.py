"""The plain-TCP (no TLS) serving side: blocking sockets and threads, leader/follower per connection, no
event loop.

Each connection has at most one **reader** at a time: a thread blocked in ``recv`` on it. The reader
answers ``PUBLISH``, ``STATS``, ``PURGE`` and ``PING`` itself (they only touch the in-process buffer). A
``CALL``:

* that is alone (no bytes read behind it, no other call of the connection under way: a sequential caller)
  runs **in the reading thread itself**. Before running it, the thread hands the connection to the
  **watcher** (one ``epoll`` thread per server, ``EPOLLONESHOT``), which starts another reader only if bytes
  arrive while the call runs. When the call is done and nobody took the reading over, the thread takes it
  back (disarming the watcher) before it writes the reply, and reads the connection's next request itself.
  A client calling sequentially is therefore served with no thread hand-off at all, as a hand-written
  blocking server would serve it;
* that overlaps other requests of the connection (several callers multiplexed on it) is handed to a worker
  thread while the reader reads on: one wake-up per call, as the event-loop design paid on every call.

A reader idle for :data:`IDLE_PARK` seconds parks the connection in the watcher and its thread goes back
to the pool, so idle connections do not hold threads. Without ``epoll`` (not Linux) there is no watcher: a
``CALL`` always goes to a worker while the reader reads on, and an idle connection keeps its reader.

Guarantees kept from the asyncio framing: per-connection backpressure (no reader while
``max_in_flight_per_connection`` requests are under way: the client is slowed down by TCP flow control),
``max_frame_bytes`` (the payload of a larger frame is skipped in chunks, never held), malformed frames get
an error reply and the connection keeps serving, at most ``call_threads`` calls run at once (the others
wait in a FIFO for a free slot). Replies are written with blocking ``sendall`` under a per-connection lock,
so frames never interleave; a client that stops reading its replies blocks the threads answering it (and
so the reading of its requests), never the server's memory. :meth:`ThreadedListener.stop` shuts every
socket down, which wakes the threads blocked in ``recv`` or ``sendall``.
"""
from __future__ import annotations

import logging
import select
import selectors
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from funboost.transport.handler_threads import HandlerThreads
from funboost_tcp import protocol as p

logger = logging.getLogger("funboost.tcp")

__all__ = ["ThreadedListener", "IDLE_PARK"]

_HEADER_SIZE = p.HEADER_SIZE
_unpack_from = p.HEADER.unpack_from
_CALL = p.CALL
_DISCARD_CHUNK = 64 * 1024
#: seconds a reader waits in ``recv`` on an idle connection before handing it to the watcher
IDLE_PARK = 2.0

# the reading role of a connection
_READING = 0  # a thread holds it (blocked in recv or handling a frame)
_WATCHED = 1  # nobody reads: the watcher starts a reader when bytes arrive
_HANDED = 2  # a worker thread was asked to become the reader
_PAUSED = 3  # nobody reads: max_in_flight_per_connection requests are under way
_CLOSED = 4

_EPOLL = getattr(select, "epoll", None)
_ONESHOT = getattr(select, "EPOLLONESHOT", 0)
_ARMED = _ONESHOT | getattr(select, "EPOLLIN", 0)


class _Conn:
    """One accepted connection. ``state``, ``in_flight`` and ``rest`` change under ``lock``; ``rest`` (bytes
    read and not yet parsed) belongs to the thread holding the reading role."""

    __slots__ = ("sock", "fd", "lock", "write_lock", "rest", "state", "in_flight", "limit")

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.rest = b""
        self.state = _HANDED
        self.in_flight = 0  # calls read and not yet answered (running or waiting for a slot)
        self.limit = limit

    def write(self, data: bytes) -> None:
        with self.write_lock:
            try:
                self.sock.sendall(data)
            except OSError:  # the connection is gone: its reader notices and closes it
                pass


class _Closed(Exception):
    """The peer closed the connection (or it broke)."""


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (one port for all of them)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                               socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _, addr in infos:
            if addr in seen:
                continue
            seen.add(addr)
            s = socket.socket(family, type_, proto)
            socks.append(s)
            if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # port 0: every address gets the port the first one got
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            s.bind(addr)
            s.listen(1024)
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


class ThreadedListener:
    """Serves plain-TCP connections on ``host:port`` with threads (see the module's docstring).

    :param request: ``request(request_id, frame_type, payload)`` -> a reply frame (bytes), or for a valid
        CALL ``(queue, body, timeout)``.
    :param call_reply: ``call_reply(request_id, queue, body, timeout, write)`` -> the reply frame of a call,
        or None when its deadline reply already went out through ``write`` (it
        blocks until the function finished).
    :param too_large: ``too_large(request_id, length)`` -> the error frame of an oversized frame.
    :raises OSError: cannot listen."""

    def __init__(self, host: str, port: int, *, request: Callable[[int, int, bytes], Any],
                 call_reply: Callable[..., bytes], too_large: Callable[[int, int], bytes], max_frame: int,
                 limit: int, call_threads: int, name: str) -> None:
        self._request = request
        self._call_reply = call_reply
        self._too_large = too_large
        self._max_frame = max_frame
        self._limit = limit
        self._max_calls = call_threads
        self._calls_lock = threading.Lock()
        self._running = 0  # calls holding a slot
        self._waiting: deque[tuple[_Conn, int, tuple]] = deque()  # calls read while every slot was taken
        self._conns: dict[int, _Conn] = {}  # by fd: the watcher's events name fds
        self._conns_lock = threading.Lock()
        self._stopped = False
        # readers and calls; started on demand (a thread per connection being read plus one per call running,
        # calls being capped by call_threads) and kept until stop()
        self._workers = HandlerThreads(1 << 30, name)
        self._socks = _listen(host, port)
        self.port = self._socks[0].getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._epoll = _EPOLL() if _EPOLL is not None else None
        if self._epoll is not None:
            self._epoll.register(self._wake_r.fileno(), _ARMED)
            threading.Thread(target=self._watch, name=f"{name}-watcher", daemon=True).start()
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------------ accepting, watching
    def _accept(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self._socks:
            sel.register(s, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopped:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        sock, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:  # out of descriptors…: keep listening
                        logger.warning("funboost tcp: accept failed: %r", exc)
                        time.sleep(0.05)
                        continue
                    self._accepted(sock)
        finally:
            sel.close()
            for s in self._socks:
                s.close()

    def _accepted(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self._epoll is not None:  # an idle reader gives its thread back after IDLE_PARK seconds
            sec = int(IDLE_PARK)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", sec, int((IDLE_PARK - sec) * 1e6)))
        conn = _Conn(sock, self._limit)
        with self._conns_lock:
            if self._stopped:
                sock.close()
                return
            self._conns[conn.fd] = conn
        if self._epoll is not None:
            self._epoll.register(conn.fd, _ONESHOT)  # disabled until armed
        self._workers.submit(self._lead, conn)

    def _watch(self) -> None:
        """The watcher: start a reader on a connection nobody reads once it has bytes (or is closed)."""
        ep, wake, conns, submit = self._epoll, self._wake_r.fileno(), self._conns, self._workers.submit
        assert ep is not None
        while True:
            try:
                events = ep.poll()
            except OSError:  # closed by stop()
                return
            for fd, _ in events:
                if fd == wake:
                    return
                conn = conns.get(fd)
                if conn is None:
                    continue
                with conn.lock:
                    if conn.state != _WATCHED:
                        continue  # taken back by a finishing call (or an event of a recycled fd)
                    conn.state = _HANDED
                submit(self._lead, conn)

    # ------------------------------------------------------------------ reading
    def _lead(self, conn: _Conn) -> None:
        """In a worker thread: take the reading role handed to it and serve the connection."""
        with conn.lock:
            if conn.state != _HANDED:
                return
            conn.state = _READING
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        """Holding the reading role: read frames and answer them until the role goes elsewhere."""
        recv, max_frame, limit = conn.sock.recv, self._max_frame, conn.limit
        data, conn.rest = conn.rest, b""
        try:
            while True:
                n = len(data)
                if n < _HEADER_SIZE:
                    try:
                        chunk = recv(p.READ_SIZE)
                    except (BlockingIOError, InterruptedError):  # SO_RCVTIMEO: idle, park the connection
                        if self._park(conn, data):
                            return
                        continue
                    if not chunk:
                        raise _Closed
                    data = data + chunk if n else chunk
                    continue
                length, request_id, frame_type = _unpack_from(data)
                end = _HEADER_SIZE + length
                if length > max_frame:
                    conn.write(self._too_large(request_id, length))
                    data = data[end:] if n >= end else self._skip(conn, end - n)
                    continue
                if n < end:
                    data = self._read_more(conn, data, end)
                    n = len(data)
                payload = data[_HEADER_SIZE:end]
                data = data[end:] if n > end else b""
                out = self._request(request_id, frame_type, payload)
                if type(out) is bytes:
                    conn.write(out)
                    continue
                # a CALL. A lone one (nothing read behind it, no other call of this connection under way: a
                # sequential caller) runs in this thread, and the watcher starts a reader if bytes come
                # meanwhile. Otherwise requests overlap on this connection: it runs in a worker while this
                # thread reads on.
                with conn.lock:
                    conn.in_flight += 1
                    full = conn.in_flight >= limit
                    with self._calls_lock:
                        slot = self._running < self._max_calls
                        if slot:
                            self._running += 1
                        else:  # every call slot is taken: it waits for one (FIFO)
                            self._waiting.append((conn, request_id, out))
                    if full:  # nobody reads until a call of this connection ends (backpressure)
                        conn.rest, conn.state = data, _PAUSED
                    elif slot and not data and conn.in_flight == 1 and self._epoll is not None:
                        conn.rest, conn.state = data, _WATCHED
                        self._arm(conn, _ARMED)
                    else:
                        if slot:
                            self._workers.submit(self._run_waiting, conn, request_id, out)
                        continue
                if not slot:
                    return  # paused
                if not self._finish(conn, self._call_reply(request_id, *out, conn.write)):
                    return
                data, conn.rest = conn.rest, b""  # this thread reads again
        except (_Closed, OSError) as exc:
            if not isinstance(exc, _Closed):
                logger.debug("funboost tcp: connection dropped: %r", exc)
            self._close(conn)

    def _arm(self, conn: _Conn, events: int) -> None:
        """Under ``conn.lock``: watch the connection for bytes (``_ARMED``) or stop watching (``_ONESHOT``)."""
        try:
            self._epoll.modify(conn.fd, events)  # type: ignore[union-attr]  (WATCHED only with epoll)
        except (OSError, ValueError):  # stopped (the epoll is closed) or the socket is closed
            pass

    def _park(self, conn: _Conn, data: bytes) -> bool:
        """The reader found nothing to read for IDLE_PARK seconds: hand the connection to the watcher."""
        with conn.lock:
            if self._stopped:
                raise _Closed
            conn.rest, conn.state = data, _WATCHED
            self._arm(conn, _ARMED)
        return True

    def _read_more(self, conn: _Conn, data: bytes, end: int) -> bytes:
        """Read until ``data`` holds ``end`` bytes (one join, however many chunks)."""
        chunks, have, recv = [data], len(data), conn.sock.recv
        while have < end:
            try:
                chunk = recv(max(p.READ_SIZE, end - have))
            except (BlockingIOError, InterruptedError):  # SO_RCVTIMEO: a frame sent slowly, keep waiting
                if self._stopped:
                    raise _Closed from None
                continue
            if not chunk:
                raise _Closed
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)

    def _skip(self, conn: _Conn, remaining: int) -> bytes:
        """Read and drop ``remaining`` bytes (an oversized frame's payload) without holding them."""
        recv, scratch = conn.sock.recv_into, bytearray(_DISCARD_CHUNK)
        view = memoryview(scratch)
        while remaining:
            try:
                got = recv(view[:min(remaining, _DISCARD_CHUNK)])
            except (BlockingIOError, InterruptedError):
                if self._stopped:
                    raise _Closed from None
                continue
            if not got:
                raise _Closed
            remaining -= got
        return b""

    # ------------------------------------------------------------------ calls
    def _finish(self, conn: _Conn, out: Optional[bytes]) -> bool:
        """After a call: free its slot, write its reply and return True when this thread is now the
        connection's reader (nobody took the reading over while the call ran, or it brought room)."""
        with self._calls_lock:
            nxt = self._waiting.popleft() if self._waiting else None
            if nxt is None:
                self._running -= 1
        if nxt is not None:  # the slot goes to the oldest waiting call
            self._workers.submit(self._run_waiting, *nxt)
        take = False
        if out is not None:
            with conn.lock:
                if conn.state == _WATCHED:  # take the reading back before the reply makes the client send
                    conn.state, take = _READING, True
                    self._arm(conn, _ONESHOT)
            conn.write(out)
        with conn.lock:
            conn.in_flight -= 1
            state = conn.state
            if state == _PAUSED and conn.in_flight < conn.limit:
                conn.state, take = _READING, True
            elif state == _CLOSED and conn.in_flight == 0:
                conn.sock.close()
        return take

    def _run_waiting(self, conn: _Conn, request_id: int, call: tuple) -> None:
        """In a worker thread: a call with its slot (skipped if its connection is closed meanwhile)."""
        out = None if conn.state == _CLOSED else self._call_reply(request_id, *call, conn.write)
        if self._finish(conn, out):
            self._read(conn)

    # ------------------------------------------------------------------ lifecycle
    def _close(self, conn: _Conn) -> None:
        with self._conns_lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
        with conn.lock:
            conn.state = _CLOSED
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if conn.in_flight == 0:
                conn.sock.close()

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, shut every connection down (waking the threads blocked on them) and wait up to
        ``grace`` seconds for them to close. Calls still running finish; their replies are dropped."""
        with self._conns_lock:
            self._stopped = True
            conns = list(self._conns.values())
        try:
            self._wake_w.send(b"x")  # the acceptor and the watcher
        except OSError:
            pass
        for conn in conns:
            with conn.lock:
                if conn.state != _CLOSED:
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                if conn.state in (_WATCHED, _PAUSED):  # no reader to notice the shutdown
                    conn.state = _HANDED
                    self._workers.submit(self._lead, conn)
        deadline = time.monotonic() + grace
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.005)
        self._acceptor.join(max(0.0, deadline - time.monotonic()) + 0.5)
        self._workers.shutdown()
        if self._epoll is not None:
            self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()
