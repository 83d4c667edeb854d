"""The consumer side: one HTTP server per (host, port) and process, served by uvicorn in a thread of its
own. The queues it hosts, their buffers and the request handling are core's
(:class:`funboost.transport.server.QueueServer`); this module is the HTTP framing: a bare ASGI callable
with four routes, the bearer-token check, the body size limit and the mapping of errors to statuses.

Routes (every reply is JSON; errors are ``{"error": <kind>, "message": <text>}``)::

    POST   /queues/{queue}/messages   envelope object, or a JSON list of them  -> 202 {"accepted": n}
    POST   /queues/{queue}/call       one envelope (timeout: X-Funboost-Timeout header or ?timeout=)
                                                                                 -> 200 status record
    GET    /queues/{queue}            -> 200 {"queue", "ready", "in_flight", "capacity", "consumers"}
    DELETE /queues/{queue}/messages   -> 200 {"purged": n}
    GET    /healthz[?queue=name]      -> 200 {"status": "serving", "queues": [...]} (503 while not serving)

Statuses: 400 bad JSON / not an envelope, 401 no token, 403 wrong token, 404 unknown queue or route,
405 wrong method, 413 body too large, 503 buffer full (``X-Funboost-Backpressure: 1``), 504 call deadline.
Nothing is unpickled: bodies are JSON.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import parse_qs, unquote

import uvicorn

from funboost.message import loads as _fast_loads
from funboost.transport.handler_threads import HandlerThreads
from funboost.transport.errors import Backpressure, BadRequest, CallDeadlineExceeded, RequestError, UnknownQueue
from funboost.transport.security import require_token_for_bind, token_matches
from funboost.transport.server import QueueServer, ServerRegistry
from funboost.transport.tls import server_ssl_context
from funboost_http.options import HttpOptions

logger = logging.getLogger("funboost.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

TIMEOUT_HEADER = b"x-funboost-timeout"
BACKPRESSURE_HEADER = b"x-funboost-backpressure"
_JSON = (b"content-type", b"application/json")
#: bodies larger than this are decoded in a worker thread, not on the event loop
_PARSE_INLINE_MAX = 64 * 1024


class _Reject(Exception):
    """An HTTP error reply: status, error kind, message (and extra headers)."""

    def __init__(self, status: int, kind: str, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


_REQUEST_ERROR_STATUS: dict[type, tuple[int, tuple]] = {
    BadRequest: (400, ()),
    UnknownQueue: (404, ()),
    Backpressure: (503, ((BACKPRESSURE_HEADER, b"1"), (b"retry-after", b"1"))),
    CallDeadlineExceeded: (504, ()),
}


def _reject_for(err: RequestError) -> _Reject:
    status, headers = _REQUEST_ERROR_STATUS.get(type(err), (500, ()))
    for cls, (s, h) in _REQUEST_ERROR_STATUS.items():  # a subclass of a known error
        if status == 500 and isinstance(err, cls):
            status, headers = s, h
    return _Reject(status, type(err).__name__, str(err), headers)


def _deadline_error(timeout: float) -> CallDeadlineExceeded:
    return CallDeadlineExceeded(f"the task did not finish within the call's timeout of {timeout}s (it still runs "
                                f"on the consumer; its result is dropped)")


def _deadline_passed(box: list, timeout: float) -> None:
    """On the loop, from the deadline watcher: answer a call that outlived its timeout with 504."""
    fut = box[0]
    if not fut.done():
        fut.set_exception(_deadline_error(timeout))


def _parse_json(body: bytes) -> Any:
    try:
        return _fast_loads(body)
    except ValueError:
        try:  # json accepts what orjson refuses (NaN, Infinity)
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _envelopes(body: bytes) -> list:
    """A publish body: one envelope object, or a JSON list of them."""
    obj = _parse_json(body)
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            if not isinstance(item, dict):
                raise BadRequest(f"item #{i} of the list is not a JSON object (the envelope), got {type(item).__name__}")
        return obj
    raise BadRequest(f"the body must be a JSON object (the envelope) or a list of them, got {type(obj).__name__}")


def server_key(options: HttpOptions) -> tuple:
    """The options two brokers must agree on to share one server."""
    return (options.token, options.max_message_bytes, options.server_threads, options.health_requires_token,
            options.keep_alive_timeout, options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file)


class HttpServer(QueueServer):
    """One started HTTP server (uvicorn in its own thread) and the queues it hosts."""

    def __init__(self, options: HttpOptions) -> None:
        # before anything listens: a reachable bind without a token (or client certificates) never starts
        require_token_for_bind("http", options.host, options.token, tls_client_auth=bool(options.tls_client_ca_file))
        # HTTPS: core's context (TLS 1.2+, client certificates when tls_client_ca_file is set), made before
        # anything listens so that a wrong path fails here
        ssl_ctx = (server_ssl_context(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file)
                   if options.tls_cert_file and options.tls_key_file else None)
        super().__init__(server_key(options))
        self._expected = f"Bearer {options.token}".encode() if options.token else None
        self._health_open = not options.health_requires_token
        self._max_body = options.max_message_bytes
        self._workers = HandlerThreads(options.server_threads, "funboost-http")
        # calls under way (running or waiting for a handler thread); beyond the cap the server answers 503
        # and the client tries another consumer, rather than queueing calls without limit
        self._calls = 0
        self._max_calls = options.server_threads * 4
        self._sock = self._bind(options.host, options.port)
        self.port = self._sock.getsockname()[1]
        host = options.host
        self.address = f"[{host}]:{self.port}" if ":" in host and not host.startswith("[") else f"{host}:{self.port}"
        # proxy_headers off: the app never looks at the client's address, and uvicorn's middleware for
        # X-Forwarded-* costs a coroutine layer per request
        config = uvicorn.Config(self, lifespan="off", log_level="warning", access_log=False, server_header=False,
                                date_header=False, timeout_keep_alive=options.keep_alive_timeout,
                                timeout_graceful_shutdown=1, http="auto", loop="auto", proxy_headers=False)
        if ssl_ctx is not None:
            # uvicorn serves with Config.ssl; loaded here so that it is our context, not one uvicorn builds
            # from file options (the same whatever uvicorn version: no ssl_context_factory needed)
            config.load()
            config.ssl = ssl_ctx
        self._scheme = "https" if ssl_ctx is not None else "http"
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"funboost-http-{self.port}")
        self._failure: Optional[BaseException] = None
        self._thread.start()
        deadline = time.monotonic() + 30.0
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                self._workers.shutdown()
                raise OSError(f"funboost http: the server on {self.address} did not start: {self._failure!r}")
            time.sleep(0.005)
        logger.info("funboost http consumer listening on %s://%s", self._scheme, self.address)

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        """Bind here (not in uvicorn) so that an address in use is an ``OSError`` of this thread, and a
        second process on the same port fails instead of sharing it."""
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then (without it,
        # Nagle + delayed ACK add 40 ms to every reply written in two parts)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind right after a restart
            sock.bind(addr)
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"funboost http: cannot listen on {host}:{port}: {exc.strerror} (port in use?)")
        sock.set_inheritable(True)
        return sock

    def _run(self) -> None:
        try:
            self._uvicorn.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit from uvicorn's startup included: reported by __init__
            self._failure = exc
            logger.exception("funboost http server on %s stopped", self.address)

    def stop(self, grace: float = 1.0) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(grace + 2.0)
        self._sock.close()
        self._workers.shutdown()

    # ------------------------------------------------------------------ the ASGI application
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; a websocket upgrade is refused
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            status, body, headers = await self._route(scope, receive)
        except _Reject as r:
            status, headers = r.status, r.headers
            body = json.dumps({"error": r.kind, "message": r.message}).encode()
        except RequestError as err:
            r = _reject_for(err)
            status, headers = r.status, r.headers
            body = json.dumps({"error": r.kind, "message": r.message}).encode()
        except Exception as exc:  # a bug here must cost one request, never the server
            logger.exception("funboost http: request failed")
            status, headers = 500, ()
            body = json.dumps({"error": type(exc).__name__, "message": str(exc)}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    def _check_token(self, scope: Scope) -> None:
        presented = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                presented = v
                break
        if presented is None:
            raise _Reject(401, "Unauthorized", "missing token: send 'Authorization: Bearer <token>'",
                          ((b"www-authenticate", b'Bearer realm="funboost"'),))
        if not token_matches(presented, self._expected):  # type: ignore[arg-type]
            raise _Reject(403, "Forbidden", "invalid token")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, refused with 413 as soon as it is known to exceed the limit."""
        limit = self._max_body
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise _Reject(400, "BadRequest", "invalid Content-Length") from None
                if declared > limit:
                    raise _Reject(413, "PayloadTooLarge", f"body of {declared} bytes exceeds the limit of {limit}")
                break
        chunks = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Reject(400, "Disconnected", "the client went away")
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:  # chunked upload without a length
                    raise _Reject(413, "PayloadTooLarge", f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, tuple]:
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        parts = raw.split(b"?", 1)[0].split(b"/")  # ['', 'queues', name, ...]: names are %-decoded per part
        if parts[1:2] == [b"healthz"] and len(parts) == 2:
            if self._expected is not None and not self._health_open:
                self._check_token(scope)
            if method not in ("GET", "HEAD"):
                raise _Reject(405, "MethodNotAllowed", f"{method} /healthz")
            return self._health(scope)
        if self._expected is not None:
            self._check_token(scope)
        if len(parts) < 3 or parts[1] != b"queues" or not parts[2] or len(parts) > 4:
            raise _Reject(404, "NotFound", f"no route {scope['path']!r}")
        queue = unquote(parts[2].decode("latin-1"))
        action = parts[3] if len(parts) == 4 else None
        if action == b"call":
            if method != "POST":
                raise _Reject(405, "MethodNotAllowed", f"{method} {scope['path']}: use POST")
            self.queue(queue)  # 404 before reading the body
            if self._calls >= self._max_calls:
                raise Backpressure(f"{self._calls} calls under way on this consumer (server_threads x 4)")
            body = await self._read_body(scope, receive)
            timeout = self._timeout(scope)
            self._calls += 1  # the event loop's thread only: no lock
            try:
                if timeout is None:
                    status_json = await self._workers.run_async(self.handle_call, queue, body, None)
                else:
                    # a call run inline holds its handler thread until the function returns: the server's
                    # deadline watcher answers 504 at the deadline instead (on_deadline), the result is dropped
                    loop, box = asyncio.get_running_loop(), []
                    fut = self._workers.run_async(self.handle_call, queue, body, timeout,
                                                  lambda: loop.call_soon_threadsafe(_deadline_passed, box, timeout))
                    box.append(fut)
                    status_json = await fut
                    if status_json is None:  # the watcher had answered; its 504 reached the loop after this
                        raise _deadline_error(timeout)
            finally:
                self._calls -= 1
            return 200, status_json.encode(), ()
        if action == b"messages":
            if method == "POST":
                self.queue(queue)
                body = await self._read_body(scope, receive)
                if len(body) > _PARSE_INLINE_MAX:  # a large batch must not stall every other connection
                    accepted = await self._workers.run_async(lambda: self.handle_publish(queue, _envelopes(body)))
                else:
                    accepted = self.handle_publish(queue, _envelopes(body))
                return 202, b'{"accepted":%d}' % accepted, ()
            if method == "DELETE":
                return 200, b'{"purged":%d}' % self.purge(queue), ()
            raise _Reject(405, "MethodNotAllowed", f"{method} {scope['path']}: use POST or DELETE")
        if action is None:
            if method not in ("GET", "HEAD"):
                raise _Reject(405, "MethodNotAllowed", f"{method} {scope['path']}: use GET")
            ready, in_flight, capacity = self.stats(queue)
            q = self.queue(queue)
            return 200, json.dumps({"queue": queue, "ready": ready, "in_flight": in_flight, "capacity": capacity,
                                    "consumers": q.refs, "inline": q.inline is not None}).encode(), ()
        raise _Reject(404, "NotFound", f"no route {scope['path']!r}")

    @staticmethod
    def _timeout(scope: Scope) -> Optional[float]:
        """Seconds the caller waits: the X-Funboost-Timeout header or ?timeout= (None: the server's cap)."""
        value: Any = None
        for k, v in scope["headers"]:
            if k == TIMEOUT_HEADER:
                value = v.decode("latin-1")
                break
        if value is None and scope.get("query_string"):
            value = (parse_qs(scope["query_string"].decode("latin-1")).get("timeout") or [None])[0]
        if value is None:
            return None
        try:
            t = float(value)
        except ValueError:
            raise _Reject(400, "BadRequest", f"invalid timeout {value!r}") from None
        if not t > 0:
            raise _Reject(400, "BadRequest", f"timeout must be > 0, got {value!r}")
        return t

    def _health(self, scope: Scope) -> tuple[int, bytes, tuple]:
        queues = sorted(self.queues)
        qs = scope.get("query_string") or b""
        if qs:
            name = (parse_qs(qs.decode("latin-1")).get("queue") or [None])[0]
            if name is not None:
                serving = name in self.queues
                return (200 if serving else 503,
                        json.dumps({"status": "serving" if serving else "not_serving", "queue": name}).encode(), ())
        return 200, json.dumps({"status": "serving", "queues": queues}).encode(), ()


#: the HTTP servers of this process, one per (host, port)
registry: ServerRegistry[HttpServer] = ServerRegistry("http")
