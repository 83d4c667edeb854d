"""The plugin's asyncio side: one event loop on a daemon thread per process, and one NATS connection
per server URL per process on that loop.

nats-py is an asyncio client; funboost's broker interface is synchronous and called from several
threads. Every NATS call therefore runs on the loop thread (``Runtime.call``) and the calling thread
waits for its result. Nothing else in the plugin touches the client from another thread.

After ``fork`` the child has neither the parent's loop thread nor its sockets: ``runtime()`` is a
:class:`funboost.process_local.ProcessLocal`, so a forked child builds a fresh loop and fresh
connections; the parent's objects are left alone (referenced, never closed by the child).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any, Awaitable, Callable, Generic, Optional, TypeVar

import nats
from nats.aio.client import Client

from funboost.process_local import ProcessLocal
from funboost.redact import shown_url

logger = logging.getLogger("funboost.nats")

T = TypeVar("T")


class BrokerState(Generic[T]):
    """A broker's per-process state (connection, stream handles), opened on first use.

    The call that opens it may carry a deadline (``time.monotonic()``): a publish bounded by its
    ``publish_timeout`` must not wait out a longer connect. ``open_state(deadline)`` builds the state;
    the deadline travels through a thread-local because :class:`ProcessLocal` calls its factory
    without arguments."""

    def __init__(self, open_state: Callable[[Optional[float]], T]) -> None:
        self._open_state = open_state
        self._deadline = threading.local()
        self._local: ProcessLocal[T] = ProcessLocal(self._open)

    def get(self, deadline: Optional[float] = None) -> T:
        if deadline is None:
            return self._local.get()
        self._deadline.value = deadline
        try:
            return self._local.get()
        finally:
            self._deadline.value = None

    def peek(self) -> Optional[T]:
        return self._local.peek()

    def clear(self) -> Optional[T]:
        return self._local.clear()

    def _open(self) -> T:
        return self._open_state(getattr(self._deadline, "value", None))


class OperationTimeout(TimeoutError):
    """A NATS operation run by :meth:`Runtime.call` did not finish in time (the message says which)."""


class Runtime:
    """The loop thread of one process and the connections it owns."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="funboost-nats-loop", daemon=True)
        self._thread.start()
        self._conn_lock = threading.Lock()
        # url -> [client, number of brokers using it]
        self._connections: dict[str, list[Any]] = {}

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Awaitable[T], timeout: Optional[float] = None, what: str = "NATS operation") -> T:
        """Run ``coro`` on the loop thread and wait for its result (``timeout`` None = no limit).

        Whatever ``coro`` raises is raised unchanged, its own ``TimeoutError`` included; only a wait that
        outlasts ``timeout`` raises :class:`OperationTimeout` (``what`` names the operation)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Runtime.call from the NATS loop thread would deadlock")
        fut: "concurrent.futures.Future[T]" = asyncio.run_coroutine_threadsafe(
            coro, self.loop)  # type: ignore[arg-type]
        # Not ``fut.result(timeout)`` inside ``except TimeoutError``: since Python 3.11
        # concurrent.futures.TimeoutError is the builtin TimeoutError, so that would also catch (and
        # replace the message of) a TimeoutError raised by the coroutine itself.
        done, _ = concurrent.futures.wait([fut], timeout)
        if not done:
            fut.cancel()
            raise OperationTimeout(f"{what} did not finish within {timeout:.3g}s")
        return fut.result()

    def spawn(self, coro_fn: Callable[[], Awaitable[Any]]) -> "concurrent.futures.Future[Any]":
        """Start a background coroutine on the loop (tickers, subscriptions)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ shared connections
    def acquire(self, url: str, connect_timeout: float, reconnect_wait: float,
                timeout: Optional[float] = None) -> Client:
        """The process's connection to ``url`` (made on first use); release it with ``release``.

        A first connection is tried for ``timeout`` seconds (default ``connect_timeout * 3 + 5``; a publish
        passes what is left of its ``publish_timeout``), then :class:`OperationTimeout` names the last
        connect error."""
        with self._conn_lock:
            entry = self._connections.get(url)
            if entry is not None and not entry[0].is_closed:
                entry[1] += 1
                return entry[0]
            limit = connect_timeout * 3 + 5 if timeout is None else max(0.01, timeout)
            errors: list[BaseException] = []
            try:
                client = self.call(_connect(url, connect_timeout, reconnect_wait, errors), timeout=limit)
            except OperationTimeout:
                last = f"{type(errors[-1]).__name__}: {errors[-1]}" if errors else "no answer"
                raise OperationTimeout(f"no connection to NATS at {shown_url(url)} within {limit:.3g}s "
                                       f"(last error: {last})") from None
            self._connections[url] = [client, 1]
            return client

    def release(self, url: str) -> None:
        with self._conn_lock:
            entry = self._connections.get(url)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._connections[url]
        try:
            self.call(entry[0].drain(), timeout=10)
        except Exception as exc:  # closing is best effort: the process may be going away
            logger.debug("closing the NATS connection to %s: %s", shown_url(url), exc)


async def _connect(url: str, connect_timeout: float, reconnect_wait: float,
                   errors: Optional[list[BaseException]] = None) -> Client:
    """Connect (retrying until cancelled: a first connect also retries while the server is down).
    ``errors`` collects the connect errors, for the message of a connect that timed out."""
    client: Optional[Client] = None

    async def on_error(exc: Exception) -> None:
        if errors is not None and client is None:  # the first connect: kept for its timeout message
            errors[:] = [exc]
        # failed attempts while reconnecting are expected during an outage: one warning said so already
        reconnecting = client is not None and client.is_reconnecting
        logger.log(logging.DEBUG if reconnecting else logging.WARNING, "NATS: %s: %s", type(exc).__name__, exc)

    async def on_disconnected() -> None:
        if client is not None and not (client.is_closed or client.is_draining):
            logger.warning("NATS: disconnected from %s; reconnecting", shown_url(url))

    async def on_reconnected() -> None:
        logger.warning("NATS: reconnected to %s", shown_url(url))

    client = await nats.connect(
        servers=[u.strip() for u in url.split(",") if u.strip()],
        name=f"funboost-{os.getpid()}",
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,  # a server restart must never end consuming for good
        reconnect_time_wait=reconnect_wait,
        error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
    )
    return client


_runtime: ProcessLocal[Runtime] = ProcessLocal(Runtime)


def runtime() -> Runtime:
    """The current process's runtime (a new one in a forked child)."""
    return _runtime.get()


def probe_options(url: str, connect_timeout: float) -> dict[str, Any]:
    """nats.connect options for a one-shot probe: one attempt per server, quiet (nats-py treats
    max_reconnect_attempts=0 as "keep trying")."""
    async def quiet(exc: Exception) -> None:
        pass
    return dict(servers=[u.strip() for u in url.split(",") if u.strip()], connect_timeout=connect_timeout,
                allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=quiet)


def check_reachable(url: str, connect_timeout: float) -> Optional[str]:
    """None if a NATS server answers at ``url``, else the reason (no reconnect loop, no shared state)."""
    async def probe() -> None:
        nc = await nats.connect(**probe_options(url, connect_timeout))
        await nc.close()
    try:
        runtime().call(probe(), timeout=connect_timeout * 2 + 5)
    except Exception as exc:
        return f"NATS at {shown_url(url)} is not reachable: {type(exc).__name__}: {exc}"
    return None
