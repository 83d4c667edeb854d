"""Connection settings, one client per process and server, fork safety and retry helpers.

Settings come from ``broker_exclusive_config`` first, then from environment variables, then from
loopback defaults. Nothing is ever read from (or written to) a file in the user's project.

=============================  =========================================  ==========================
option                         environment variable                       default
=============================  =========================================  ==========================
``url``                        ``FUNBOOST_REDIS_URL``                     ``redis://127.0.0.1:6379/0``
``sentinels``                  ``FUNBOOST_REDIS_SENTINELS`` (h:p,h:p)     none
``sentinel_master``            ``FUNBOOST_REDIS_SENTINEL_MASTER``         ``mymaster``
``cluster``                    ``FUNBOOST_REDIS_CLUSTER`` (1/true)        false
=============================  =========================================  ==========================
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar
from urllib.parse import urlparse

import hiredis
import redis
from pydantic import Field, model_validator
from redis.backoff import NoBackoff
from redis.exceptions import InvalidResponse
from redis.retry import Retry

from funboost.plugins.broker import BrokerOptions
from funboost.process_local import ProcessLocalDict
from funboost.redact import shown_url
from funboost.utils.private_random import rng

logger = logging.getLogger("funboost.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ENV_URL = "FUNBOOST_REDIS_URL"
ENV_SENTINELS = "FUNBOOST_REDIS_SENTINELS"
ENV_SENTINEL_MASTER = "FUNBOOST_REDIS_SENTINEL_MASTER"
ENV_CLUSTER = "FUNBOOST_REDIS_CLUSTER"

# Errors after which the server may have executed the command or not: we retry idempotent
# operations ourselves (with backoff) instead of letting redis-py silently re-run a Lua script.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
try:  # redis-py >= 4.1 has ClusterDownError / TryAgainError during failover
    from redis.exceptions import ClusterDownError, TryAgainError

    TRANSIENT_ERRORS = TRANSIENT_ERRORS + (ClusterDownError, TryAgainError)
except ImportError:  # pragma: no cover
    pass
# A replica promoted by Sentinel answers READONLY until the client re-resolves the master.
TRANSIENT_ERRORS = TRANSIENT_ERRORS + (redis.ReadOnlyError,)


class RedisOptions(BrokerOptions):
    """``broker_exclusive_config`` of every Redis kind."""

    url: Optional[str] = Field(None, description=f"redis://, rediss:// or unix:// URL; env {ENV_URL}")
    sentinels: Optional[list[str]] = Field(None, description="'host:port' of Sentinel servers")
    sentinel_master: Optional[str] = None
    cluster: Optional[bool] = None
    key_prefix: str = "funboost"
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    # None: no limit (redis-py 6+ caps a pool at 100 connections by default, fewer than a consumer of
    # concurrent_num >= 100 plus its publishers and RPC waiters need: "Too many connections" lost RPC results)
    max_connections: Optional[int] = None
    # liveness of consumers (ack-able, priority and stream kinds)
    heartbeat_interval: float = Field(2.0, gt=0)
    heartbeat_timeout: float = Field(10.0, gt=0)
    reclaim_interval: Optional[float] = Field(None, gt=0, description="default: heartbeat_interval")
    # how long publish/ack keep retrying while the server is unreachable before raising
    retry_seconds: float = Field(30.0, ge=0)
    # client-side publish buffer (off by default): see docs/brokers/redis.md
    linger_ms: float = Field(0.0, ge=0)
    linger_max_batch: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "RedisOptions":
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must be at least twice heartbeat_interval")
        return self


@dataclass(frozen=True)
class ConnSpec:
    url: str
    sentinels: tuple[tuple[str, int], ...]
    sentinel_master: str
    cluster: bool
    socket_timeout: float
    connect_timeout: float
    max_connections: Optional[int]


def _truthy(v: Optional[str]) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def conn_spec(opts: RedisOptions) -> ConnSpec:
    url = opts.url or os.environ.get(ENV_URL) or DEFAULT_URL
    raw_sentinels = opts.sentinels
    if raw_sentinels is None and os.environ.get(ENV_SENTINELS):
        raw_sentinels = [s for s in os.environ[ENV_SENTINELS].split(",") if s.strip()]
    sentinels = []
    for s in raw_sentinels or ():
        host, _, port = s.strip().rpartition(":")
        sentinels.append((host or "127.0.0.1", int(port or 26379)))
    cluster = opts.cluster if opts.cluster is not None else _truthy(os.environ.get(ENV_CLUSTER))
    master = opts.sentinel_master or os.environ.get(ENV_SENTINEL_MASTER) or "mymaster"
    return ConnSpec(url, tuple(sentinels), master, bool(cluster), opts.socket_timeout,
                    opts.connect_timeout, opts.max_connections)


#: redis-py < 6's default; redis-py 6+ defaults to 100, which a pool shared by 100+ worker threads / greenlets
#: exhausts at once (MaxConnectionsError on set_result, fetch, heartbeat)
_UNLIMITED = 2 ** 31


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def build_client(spec: ConnSpec) -> Any:
    """A new client for ``spec``. redis-py's own retries are off: see TRANSIENT_ERRORS."""
    common: dict[str, Any] = dict(socket_timeout=spec.socket_timeout,
                                  socket_connect_timeout=spec.connect_timeout)
    if spec.cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(spec.url, **common)
    if spec.sentinels:
        from redis.sentinel import Sentinel

        parsed = urlparse(spec.url)
        db = int((parsed.path or "/0").lstrip("/") or 0)
        sentinel = Sentinel(list(spec.sentinels), socket_timeout=spec.connect_timeout,
                            socket_connect_timeout=spec.connect_timeout)
        return sentinel.master_for(spec.sentinel_master, db=db, password=parsed.password,
                                   username=parsed.username, retry=_no_retry(),
                                   max_connections=spec.max_connections or _UNLIMITED, **common)
    kw: dict[str, Any] = dict(common, retry=_no_retry(), health_check_interval=30)
    kw["max_connections"] = spec.max_connections or _UNLIMITED
    return redis.Redis.from_url(spec.url, **kw)


try:  # maps an error reply to redis-py's exception classes (NoScriptError, ReadOnlyError...), as its parser does
    from redis._parsers.base import BaseParser as _BaseParser

    _parse_error: Callable[[str], Exception] = _BaseParser.parse_error
except (ImportError, AttributeError):  # pragma: no cover - another redis-py layout
    _parse_error = redis.ResponseError

#: a connection idle longer than this takes redis-py's path for its next command, which PINGs it first when
#: it has been idle for ``health_check_interval`` (30 s, see build_client): a dead idle connection is found
#: before a command is written to it
_DIRECT_MAX_IDLE = 20.0


class _OwnConnection:
    """A redis-py connection kept by :class:`Handle` outside the pool, with a direct path for commands.

    The first command (and any after the connection sat idle, or was re-made) goes through redis-py:
    ``send_packed_command`` connects, authenticates, selects the database and health-checks. The others
    write the encoded command with one ``sendall`` and parse the reply with a hiredis reader of this
    object's own: redis-py's ``read_response`` layers (health check, host error text, parser
    indirections) cost more CPU than the loopback round trip of a one-by-one ``LPUSH``. One command at a
    time per connection (the Handle lends each to one thread), so the reader never holds a partial reply
    between commands; any failure drops the connection.
    """

    __slots__ = ("conn", "sock", "reader", "used")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = None  # the socket the direct path may use (None: take redis-py's path)
        self.reader: Any = None
        self.used = 0.0

    def run(self, data: bytes) -> Any:
        now = time.monotonic()
        sock = self.sock
        if sock is None or now - self.used > _DIRECT_MAX_IDLE or sock is not self.conn._sock:
            conn = self.conn
            conn.send_packed_command((data,))
            reply = conn.read_response()
            # only where redis-py parses with hiredis too (configured as below), so replies are the same
            if "Hiredis" in type(getattr(conn, "_parser", None)).__name__:
                self.sock = conn._sock
                self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_parse_error)
            self.used = time.monotonic()
            return reply
        self.used = now
        reader = self.reader
        try:
            sock.sendall(data)
            reply = reader.gets()
            while reply is False:  # False: no complete reply yet
                chunk = sock.recv(65536)
                if not chunk:
                    raise redis.ConnectionError("Connection closed by server.")
                reader.feed(chunk)
                reply = reader.gets()
        except socket.timeout:
            raise redis.TimeoutError("Timeout reading from socket") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Error while talking to redis: {exc}") from None
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def drop(self) -> None:
        self.sock = None
        self.conn.disconnect()


class Handle:
    """A process-local client plus its registered Lua scripts."""

    def __init__(self, spec: ConnSpec) -> None:
        self.spec = spec
        self.client = build_client(spec)
        self._scripts: dict[str, Any] = {}

        pool = getattr(self.client, "connection_pool", None)
        # a plain client: single commands skip redis-py's per-call machinery (retry wrapper, event
        # dispatch, pool bookkeeping with metrics), which costs 3-4x the command itself. Cluster and
        # Sentinel clients keep redis-py's path: it routes by key / re-resolves the master on failover.
        self._pool = pool if not spec.cluster and not spec.sentinels and pool is not None else None
        # idle connections of our own, made like the pool's but kept out of it: LIFO, list pop/append are
        # atomic, so borrowing costs no lock; as many as threads ever ran a command at the same time
        self._free: list[_OwnConnection] = []

    def _borrow(self) -> _OwnConnection:
        try:
            return self._free.pop()
        except IndexError:
            pool = self._pool
            return _OwnConnection(pool.connection_class(**pool.connection_kwargs))  # type: ignore[union-attr]

    def command(self, *args: Any) -> Any:
        """Run one command with the least client overhead (the raw reply, no response callbacks)."""
        if self._pool is None:
            return self.client.execute_command(*args)
        return self.command_packed(encode_command(*args))

    def command_packed(self, data: bytes) -> Any:
        """Send one command already encoded (:func:`encode_command`) and return its raw reply."""
        conn = self._borrow()
        try:
            reply = conn.run(data)
        except redis.ResponseError:
            self._free.append(conn)
            raise
        except BaseException:
            conn.drop()
            raise
        self._free.append(conn)
        return reply

    def command_with(self, prefix: bytes, value: Any) -> Any:
        """``prefix`` (from :func:`encode_prefix`: the command and its fixed arguments, encoded once)
        followed by one bulk argument ``value`` (str or bytes): the one-by-one publish path."""
        if self._pool is None:
            return self.client.execute_command(*decode_prefix(prefix), value)
        b = value.encode("utf-8") if isinstance(value, str) else value
        return self.command_packed(b"%s$%d\r\n%s\r\n" % (prefix, len(b), b))

    def script(self, name: str, source: str) -> Any:
        """A callable ``script(keys=[...], args=[...])`` running the Lua ``source`` by its SHA (and
        loading it again after NOSCRIPT, e.g. after a server restart)."""
        s = self._scripts.get(name)
        if s is None:
            if self._pool is None:  # cluster: redis-py routes by key
                s = self._scripts[name] = self.client.register_script(source)
            else:
                s = self._scripts[name] = _Script(self, source)
        return s


class _Script:
    """EVALSHA sent through :meth:`Handle.command_packed`: on the fetch and ack paths, redis-py's
    ``Script`` (execute_command, per-argument encoder calls) cost more CPU than the Lua script itself."""

    def __init__(self, handle: Handle, source: str) -> None:
        self._handle = handle
        self._source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        data = encode_command("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return self._handle.command_packed(data)
        except redis.exceptions.NoScriptError:
            self._handle.command("SCRIPT", "LOAD", self._source)
            return self._handle.command_packed(data)


def encode_command(*args: Any) -> bytes:
    """RESP encoding of a command (str, bytes, int and float arguments, as redis-py encodes them), in
    one join: cheaper than redis-py's packer for commands with many arguments (HDEL of an ack batch)."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        elif isinstance(a, int):
            a = b"%d" % a
        elif isinstance(a, float):
            a = repr(a).encode("ascii")
        elif not isinstance(a, (bytes, bytearray, memoryview)):
            raise TypeError(f"cannot send a {type(a).__name__} to redis")
        append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def encode_prefix(*parts: str) -> bytes:
    """RESP encoding of a command whose arguments are ``parts`` plus one more (given to
    :meth:`Handle.command_with`): the array header counts that last argument."""
    out = [b"*%d\r\n" % (len(parts) + 1)]
    for p in parts:
        b = p.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def decode_prefix(prefix: bytes) -> list[str]:
    """The arguments encoded by :func:`encode_prefix` (for clients that cannot take raw RESP: cluster)."""
    lines = prefix.split(b"\r\n")
    return [lines[i].decode("utf-8") for i in range(2, len(lines) - 1, 2)]


# one client per (process, server): a forked child builds its own (sockets must not be shared)
_handles: ProcessLocalDict[ConnSpec, Handle] = ProcessLocalDict()


def get_handle(spec: ConnSpec) -> Handle:
    return _handles.get_or_create(spec, lambda: Handle(spec))


T = TypeVar("T")


def with_retry(fn: Callable[[], T], retry_seconds: float, what: str) -> T:
    """Run ``fn`` until it succeeds, retrying transient connection errors with jittered exponential
    backoff (50 ms .. 1 s) for at most ``retry_seconds``. Only for idempotent or at-least-once steps."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.05
    while True:
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("redis %s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__,
                           exc, delay)
            time.sleep(delay * (0.5 + rng.random()))
            delay = min(delay * 2, 1.0)


def check_available(opts: RedisOptions) -> Optional[str]:
    spec = conn_spec(opts)
    spec = ConnSpec(spec.url, spec.sentinels, spec.sentinel_master, spec.cluster,
                    min(spec.socket_timeout, 2.0), min(spec.connect_timeout, 2.0), None)
    try:
        client = build_client(spec)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "not usable", with the reason
        where = shown_url(spec.url) if not spec.sentinels else f"sentinels {spec.sentinels}"
        return f"redis at {where} is not reachable: {type(exc).__name__}: {exc}"
    return None
