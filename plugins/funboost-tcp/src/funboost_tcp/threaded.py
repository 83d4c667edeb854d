"""The plain-TCP (no TLS) serving side: one polling thread that runs calls itself, and a monitor that hands
the polling on when a call or a write takes long. No event loop.

One thread at a time, the **leader**, waits in ``epoll`` (level-triggered) on every connection and the
listening sockets, and serves what arrives: it parses the frames, answers ``PUBLISH``, ``STATS``,
``PURGE`` and ``PING`` (they only touch the in-process buffer), and runs a ``CALL`` **itself**, then
writes its reply, as a hand-written single-threaded server would. Under load one ``epoll_wait`` reports
several ready connections, and no request costs a thread hand-off or a turn of the GIL between threads:
with 8 callers this serves about 2.5 times the calls per second of the earlier design, a reading thread
per connection (``bench/tcp_cpu_bench.py``: 7.3 context switches per call there, none here).

A call can be slow (the user's function) and a write can block (a client that does not read its replies),
and the leader must not hold the other connections up meanwhile. Before each such *step* the leader
publishes it (``_busy``); the **monitor** thread looks every :data:`HANDOFF` seconds and, when it sees the
same step twice, makes another thread the leader, as Go's scheduler hands a processor on when a thread
blocks in a system call. The old leader finishes its step, writes its reply and leaves; the new one goes
on polling (the connection's unparsed bytes are its to read). :data:`SLOW_RUNS` calls in a row that waited
(for I/O, a sleep, a lock: their time less their thread's CPU time) longer than :data:`SLOW_CALL` (0.2 ms)
mark their queue *offloaded*: the queue's next calls go to
worker threads at once and run side by side (no wait for the monitor, no calls of 0.5 ms queued behind
each other); every :data:`PROBE_AFTER` seconds one of them runs in the leader again, and if it is quick
the queue's calls run there again (a hiccup of the host does not cost the fast path for good). A blocked
write pauses its connection's reading until it is through. The monitor sleeps while nothing is under way.

Guarantees: per-connection backpressure (a connection is not read while ``max_in_flight_per_connection``
of its requests are under way, or while a reply to it is blocked: the client is slowed down by TCP flow
control), ``max_frame_bytes`` (the payload of a larger frame is dropped as it arrives, never held),
malformed frames get an error reply and the connection keeps serving, at most ``call_threads`` calls run
at once (the others wait in a FIFO for a free slot; their connection keeps being read). Replies are
written under a per-connection lock, so frames never interleave. :meth:`ThreadedListener.stop` shuts
every socket down, which wakes the threads blocked in ``sendall``.

Needs ``MSG_DONTWAIT`` (Linux, the BSDs, macOS): elsewhere (:data:`AVAILABLE` false) the server runs the
plain-TCP connections on its asyncio framing, as it does TLS ones.
"""
from __future__ import annotations

import logging
import select
import selectors
import socket
import threading
from collections import deque
from time import monotonic, sleep, thread_time
from typing import Any, Callable, Optional

from funboost.transport.handler_threads import HandlerThreads
from funboost_tcp import protocol as p

logger = logging.getLogger("funboost.tcp")

__all__ = ["ThreadedListener", "HANDOFF", "SLOW_CALL", "PROBE_AFTER", "SLOW_RUNS", "AVAILABLE"]

_HEADER_SIZE = p.HEADER_SIZE
_unpack_from = p.HEADER.unpack_from
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
#: whether this platform can run the listener (non-blocking reads on sockets that block for writes)
AVAILABLE = bool(_MSG_DONTWAIT)
#: seconds between the monitor's looks: a call or a write still under way at two looks in a row (so after
#: HANDOFF to 2 x HANDOFF) is handed on and the polling goes to another thread
HANDOFF = 0.001
#: an inline call that waited longer than this (seconds: its time less its thread's CPU time) counts as
#: slow; SLOW_RUNS in a row offload its queue: its calls then run in worker threads, in parallel, until a
#: probe is quick again. Inline running pays off for calls that compute, whose work the GIL serializes
#: anyway; a call that waits (I/O, a sleep) is better run beside others (8 callers of a 0.5 ms sleep: 2,000
#: calls/s inline, about 8 times that offloaded). CPU time is left out so that a quick call stays quick on a
#: slow host, where the engine's own work per call alone came near 0.2 ms and kept quick queues offloaded
SLOW_CALL = 0.0002
#: seconds an offloaded queue's calls go to workers before one is tried in the leader again (its time
#: there decides: quick, the queue is back; slow, offloaded again). Not judged from the workers' runs:
#: several calls running side by side take longer each (the GIL), a quick function would look slow there.
PROBE_AFTER = 0.1
#: slow inline calls in a row that offload a queue: one is no evidence on a busy host, where the scheduler
#: may stop the polling thread for milliseconds in the middle of a quick call
SLOW_RUNS = 3
#: the monitor's looks with nothing under way before it sleeps until the leader starts a step
_IDLE_LOOKS = 200

# why a connection is not read (bits of _Conn.paused)
_FULL = 1  # max_in_flight_per_connection requests under way
_WRITING = 2  # a reply to it is blocked in sendall in a thread that is no longer the leader

# what the leader is doing (the second item of a _busy step)
_CALL_STEP, _WRITE_STEP = 0, 1


class _EpollPoller:
    """Level-triggered epoll: a paused connection stays registered with no events."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._in = select.EPOLLIN

    def add(self, fd: int) -> None:
        self._ep.register(fd, self._in)

    def enable(self, fd: int, on: bool) -> None:
        self._ep.modify(fd, self._in if on else 0)

    def remove(self, fd: int) -> None:
        self._ep.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._ep.poll(timeout)

    def close(self) -> None:
        self._ep.close()


class _SelectorPoller:
    """The platform's selector where there is no epoll: a paused connection is unregistered."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    def add(self, fd: int) -> None:
        self._sel.register(fd, selectors.EVENT_READ)

    def enable(self, fd: int, on: bool) -> None:
        if on:
            self._sel.register(fd, selectors.EVENT_READ)
        else:
            self._sel.unregister(fd)

    def remove(self, fd: int) -> None:
        self._sel.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [(key.fd, ev) for key, ev in self._sel.select(None if timeout < 0 else timeout)]

    def close(self) -> None:
        self._sel.close()


class _Conn:
    """One accepted connection. ``parts`` / ``have`` / ``need`` / ``skip`` (bytes read and not parsed yet)
    belong to the leader; ``paused``, ``closed`` and ``in_flight`` change under ``lock``."""

    __slots__ = ("sock", "fd", "lock", "write_lock", "parts", "have", "need", "skip", "paused", "closed",
                 "in_flight", "limit")

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.parts: list[bytes] = []
        self.have = 0  # bytes in parts
        self.need = 0  # bytes parts must hold before parsing is worth it (a frame's end)
        self.skip = 0  # bytes of an oversized frame still to drop as they arrive
        self.paused = 0
        self.closed = False
        self.in_flight = 0  # calls read and not yet answered (running or waiting for a slot)
        self.limit = limit

    def keep(self, data: bytes) -> None:
        """Hold ``data`` (the bytes not parsed yet) for the next parse."""
        self.parts = [data] if data else []
        self.have = len(data)
        self.need = 0

    def take(self) -> bytes:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.have = 0
        return data

    def write(self, data: bytes) -> None:
        """Blocking, thread-safe write (any thread but the leader)."""
        with self.write_lock:
            try:
                self.sock.sendall(data)
            except OSError:  # the connection is gone: the leader notices and closes it
                pass


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
    """Serves plain-TCP connections on ``host:port`` (see the module's docstring).

    :param request: ``request(request_id, frame_type, payload)`` -> a reply frame (bytes), or for a valid
        CALL ``(queue, body, timeout)``.
    :param call_reply: ``call_reply(request_id, queue, body, timeout, write)`` -> the reply frame of a call,
        or None when its deadline reply already went out through ``write`` (it
        blocks until the function finished).
    :param too_large: ``too_large(request_id, length)`` -> the error frame of an oversized frame.
    :raises OSError: cannot listen."""

    def __init__(self, host: str, port: int, *, request: Callable[[int, int, bytes], Any],
                 call_reply: Callable[..., Optional[bytes]], too_large: Callable[[int, int], bytes],
                 max_frame: int, limit: int, call_threads: int, name: str) -> None:
        self._request = request
        self._call_reply = call_reply
        self._too_large = too_large
        self._max_frame = max_frame
        self._limit = limit
        self._max_calls = call_threads
        self._calls_lock = threading.Lock()
        self._running = 0  # calls holding a slot
        self._waiting: deque[tuple[_Conn, int, tuple]] = deque()  # calls read while every slot was taken
        # queue -> until when (monotonic) its calls go to a worker rather than run in the leader
        self._offload: dict[str, float] = {}
        self._slow_runs: dict[str, int] = {}  # queue -> its inline calls in a row that took over SLOW_CALL
        self._conns: dict[int, _Conn] = {}  # by fd: the poller's events name fds
        self._conns_lock = threading.Lock()
        self._stopped = False
        # the leader's step under way, (conn, step); a new tuple per step, so the monitor tells two steps apart
        # by identity. Cleared, and the leadership checked, under _lead_lock.
        self._busy: Optional[tuple[_Conn, int]] = None
        self._lead_lock = threading.Lock()
        self._gen = 0  # the current leader's generation: a thread whose generation is past is no leader
        self._leader_ident = 0
        self._ready: deque[_Conn] = deque()  # connections with parsed-later bytes the leader must look at
        self._monitor_idle = False
        self._monitor_wake = threading.Event()
        # the leaders, offloaded calls and calls that waited for a slot; kept until stop()
        self._workers = HandlerThreads(1 << 30, name)
        self._socks = _listen(host, port)
        self.port = self._socks[0].getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._poller: Any = _EpollPoller() if hasattr(select, "epoll") else _SelectorPoller()
        self._listening = {s.fileno(): s for s in self._socks}
        try:
            for fd in (*self._listening, self._wake_r.fileno()):
                self._poller.add(fd)
        except BaseException:
            self._close_sockets()
            raise
        self._monitor_thread = threading.Thread(target=self._monitor, name=f"{name}-monitor", daemon=True)
        self._monitor_thread.start()
        self._workers.submit(self._lead, 0)

    # ------------------------------------------------------------------ the leader
    def _lead(self, gen: int) -> None:
        """Poll and serve until another thread is made the leader or the listener stops."""
        self._leader_ident = threading.get_ident()
        try:
            self._poll_and_serve(gen)
        finally:
            # the leader of the moment closes what it polls when the listener stops (stop() does not: a leader
            # it cannot see yet, just handed the polling, would wait on a closed epoll for ever)
            if self._stopped and self._gen == gen:
                self._close_polling()

    def _poll_and_serve(self, gen: int) -> None:
        poll, ready, conns, listening = self._poller.poll, self._ready, self._conns, self._listening
        wake = self._wake_r.fileno()
        while not self._stopped:
            while ready:  # connections with bytes read and not parsed (room again, a hand-on)
                if not self._serve(ready.popleft(), gen, False):
                    return
            try:
                events = poll(0 if ready else -1)
            except (OSError, ValueError):  # closed by stop()
                return
            for fd, _ in events:
                conn = conns.get(fd)
                if conn is not None:
                    if not self._serve(conn, gen, True):
                        return
                elif fd in listening:
                    self._accept(listening[fd])
                elif fd == wake:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    if self._stopped:
                        return

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors…: the next poll reports the socket again
                if self._stopped:  # closed by stop()
                    return
                logger.warning("funboost tcp: accept failed: %r", exc)
                return
            sock.setblocking(True)  # writes block (in a step); reads use MSG_DONTWAIT
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = _Conn(sock, self._limit)
            with self._conns_lock:
                if self._stopped:
                    sock.close()
                    return
                self._conns[conn.fd] = conn
            self._poller.add(conn.fd)

    def _serve(self, conn: _Conn, gen: int, readable: bool) -> bool:
        """Read what ``conn`` has and answer every complete frame; False when this thread stopped being the
        leader meanwhile (it must leave at once)."""
        if conn.paused or conn.closed:  # paused after the poll reported it (or a stale ready entry)
            return True
        if readable:
            try:
                chunk = conn.sock.recv(p.READ_SIZE, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError as exc:
                logger.debug("funboost tcp: connection dropped: %r", exc)
                self._close(conn)
                return True
            if chunk is not None:
                if not chunk:
                    self._close(conn)
                    return True
                if conn.skip:  # the rest of an oversized frame: dropped as it arrives
                    dropped = min(conn.skip, len(chunk))
                    conn.skip -= dropped
                    chunk = chunk[dropped:]
                if chunk:
                    conn.parts.append(chunk)
                    conn.have += len(chunk)
        if not conn.have or conn.have < conn.need:
            return True
        return self._frames(conn, conn.take(), gen)

    def _frames(self, conn: _Conn, data: bytes, gen: int) -> bool:
        max_frame, limit = self._max_frame, conn.limit
        while True:
            n = len(data)
            if n < _HEADER_SIZE:
                conn.keep(data)
                return True
            length, request_id, frame_type = _unpack_from(data)
            end = _HEADER_SIZE + length
            if length > max_frame:
                if n < end:
                    conn.skip, data = end - n, b""
                else:
                    data = data[end:]
                conn.keep(data)
                if not self._write(conn, self._too_large(request_id, length), gen):
                    return False
                data = conn.take()
                continue
            if n < end:
                conn.keep(data)
                conn.need = end
                return True
            payload = data[_HEADER_SIZE:end]
            data = data[end:] if n > end else b""
            out = self._request(request_id, frame_type, payload)
            conn.keep(data)  # before any step: a new leader reads on from here
            if type(out) is bytes:
                if not self._write(conn, out, gen):
                    return False
            else:  # a CALL
                with conn.lock:
                    conn.in_flight += 1
                    if conn.in_flight >= limit:  # not read again until a call of it ends (backpressure)
                        self._pause(conn, _FULL)
                with self._calls_lock:
                    slot = self._running < self._max_calls
                    if slot:
                        self._running += 1
                    else:  # every call slot is taken: it waits for one (FIFO)
                        self._waiting.append((conn, request_id, out))
                if slot:
                    until = self._offload.get(out[0]) if self._offload else None
                    if until is not None and until > monotonic():
                        self._workers.submit(self._run_call, conn, request_id, out)
                    elif not self._inline_call(conn, request_id, out, gen):
                        return False
            if conn.paused or conn.closed:
                return True
            data = conn.take()

    def _inline_call(self, conn: _Conn, request_id: int, call: tuple, gen: int) -> bool:
        """Run a call in the leader, as a step the monitor may hand on; then answer it."""
        self._busy = step = (conn, _CALL_STEP)
        self._monitor_needed()
        t0, cpu0 = monotonic(), thread_time()
        out = self._call_reply(request_id, *call, conn.write)
        if (monotonic() - t0) - (thread_time() - cpu0) > SLOW_CALL:
            queue = call[0]
            slow = self._slow_runs[queue] = self._slow_runs.get(queue, 0) + 1
            if slow >= SLOW_RUNS:
                self._offload[queue] = monotonic() + PROBE_AFTER
        elif self._slow_runs:
            self._slow_runs.pop(call[0], None)
            self._offload.pop(call[0], None)
        leader = self._end_step(step, gen)
        return self._finish(conn, out, gen if leader else None) and leader

    def _write(self, conn: _Conn, data: bytes, gen: int) -> bool:
        """The leader writes a reply: at once when the socket takes it, else as a step the monitor may hand
        on (the connection is then not read until the write is through)."""
        lock = conn.write_lock
        if lock.acquire(False):
            try:
                sent = conn.sock.send(data, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the connection is gone: the next read notices
                lock.release()
                return True
            if sent == len(data):
                lock.release()
                return True
            self._busy = step = (conn, _WRITE_STEP)
            self._monitor_needed()
            try:
                conn.sock.sendall(memoryview(data)[sent:])
            except OSError:
                pass
            finally:
                lock.release()
        else:  # another thread is writing to it
            self._busy = step = (conn, _WRITE_STEP)
            self._monitor_needed()
            conn.write(data)
        leader = self._end_step(step, gen)
        if not leader:  # the monitor paused the connection's reading while this write was blocked
            self._resume(conn, _WRITING)
        return leader

    def _end_step(self, step: tuple, gen: int) -> bool:
        """A step of the leader ``gen`` is over: True when that thread is still the leader. A thread that was
        handed on leaves ``_busy`` alone: it is the new leader's by now."""
        with self._lead_lock:
            if self._busy is step:
                self._busy = None
            return self._gen == gen

    # ------------------------------------------------------------------ calls
    def _finish(self, conn: _Conn, out: Optional[bytes], gen: Optional[int]) -> bool:
        """After a call: give its slot to the oldest waiting call (or free it), write the reply (as the
        leader when ``gen`` is set), count it answered. False: the leadership was handed on meanwhile."""
        with self._calls_lock:
            nxt = self._waiting.popleft() if self._waiting else None
            if nxt is None:
                self._running -= 1
        if nxt is not None:
            self._workers.submit(self._run_call, *nxt)
        leader = True
        if out is not None:
            if gen is not None:
                leader = self._write(conn, out, gen)
            else:
                conn.write(out)
        with conn.lock:
            conn.in_flight -= 1
            room = conn.paused & _FULL and conn.in_flight < conn.limit
            close = conn.closed and conn.in_flight == 0
        if room:
            self._resume(conn, _FULL)
        if close:
            conn.sock.close()
        return leader

    def _run_call(self, conn: _Conn, request_id: int, call: tuple) -> None:
        """In a worker thread: an offloaded call, or one that waited for a slot (skipped when its connection
        closed meanwhile)."""
        if conn.closed:
            out = None
        else:
            out = self._call_reply(request_id, *call, conn.write)
        self._finish(conn, out, None)

    # ------------------------------------------------------------------ pausing a connection's reading
    def _pause(self, conn: _Conn, reason: int) -> None:
        """Under ``conn.lock``."""
        was = conn.paused
        conn.paused |= reason
        if not was and not conn.closed:
            self._enable(conn, False)

    def _resume(self, conn: _Conn, reason: int) -> None:
        with conn.lock:
            if not conn.paused & reason:
                return
            conn.paused &= ~reason
            if conn.paused or conn.closed:
                return
            self._enable(conn, True)
        if conn.have:  # bytes read before the pause: the poller does not know of them
            self._ready.append(conn)
            if threading.get_ident() != self._leader_ident:
                self._wake()

    def _enable(self, conn: _Conn, on: bool) -> None:
        try:
            self._poller.enable(conn.fd, on)
        except (OSError, ValueError, KeyError):  # stopped (the poller is closed) or the socket closed
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # stopped, or a wake-up is already waiting
            pass

    # ------------------------------------------------------------------ the monitor
    def _monitor_needed(self) -> None:
        """The leader started a step: wake the monitor if it sleeps (it set _monitor_idle before checking
        _busy, the leader set _busy before checking _monitor_idle: one of the two sees the other)."""
        if self._monitor_idle:
            self._monitor_idle = False
            self._monitor_wake.set()

    def _monitor(self) -> None:
        seen, idle_looks = None, 0
        while not self._stopped:
            sleep(HANDOFF)
            busy = self._busy
            if busy is None:
                seen = None
                idle_looks += 1
                if idle_looks >= _IDLE_LOOKS:
                    self._monitor_idle = True
                    if self._busy is None:
                        self._monitor_wake.wait()
                    self._monitor_wake.clear()
                    self._monitor_idle = False
                    idle_looks = 0
                continue
            idle_looks = 0
            if busy is not seen:
                seen = busy
                continue
            self._hand_on(busy)
            seen = None

    def _hand_on(self, busy: tuple[_Conn, int]) -> None:
        """The leader has been in the same step since the last look: make another thread the leader."""
        conn, step = busy
        with self._lead_lock:
            if self._busy is not busy or self._stopped:
                return
            self._busy = None
            self._gen += 1
            gen = self._gen
            if step == _CALL_STEP:
                if conn.have:  # requests read behind the call: the new leader answers them
                    self._ready.append(conn)
            else:
                with conn.lock:
                    self._pause(conn, _WRITING)
        logger.debug("funboost tcp: a %s held the polling thread for over %.1f ms; handing the polling on",
                     "call" if step == _CALL_STEP else "blocked write", HANDOFF * 1e3)
        self._workers.submit(self._lead, gen)

    # ------------------------------------------------------------------ lifecycle
    def _close(self, conn: _Conn) -> None:
        with self._conns_lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
        with conn.lock:
            if conn.closed:
                return
            conn.closed = True
            try:  # before the socket closes, so that a new connection may get its fd
                self._poller.remove(conn.fd)
            except (OSError, ValueError, KeyError):  # stopped, or a selector's paused (unregistered) fd
                pass
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
        """Stop accepting and close every connection (a call still running finishes; its reply is dropped).
        Threads blocked writing are woken by the shutdown; the polling thread leaves at once, or after the
        call it runs."""
        with self._lead_lock:  # no hand-on after this
            with self._conns_lock:
                self._stopped = True
                conns = list(self._conns.values())
        for s in self._socks:
            s.close()
        self._wake()
        self._monitor_wake.set()
        for conn in conns:
            self._close(conn)
        self._monitor_thread.join(grace + HANDOFF * 2)
        self._workers.shutdown()

    def _close_sockets(self) -> None:
        for s in self._socks:
            s.close()
        self._close_polling()

    def _close_polling(self) -> None:
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()

