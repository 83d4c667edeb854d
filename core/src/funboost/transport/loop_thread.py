"""An asyncio event loop in a daemon thread of its own, behind a synchronous interface: what a transport
written on asyncio (its server, its client connections) runs on while the engine and the user's code
stay synchronous.

:func:`shared_loop` gives one loop thread per name and process (a forked child starts its own: a loop and
its sockets never cross a fork).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, Optional, TypeVar

from funboost.process_local import ProcessLocalDict

__all__ = ["LoopThread", "shared_loop"]

T = TypeVar("T")


class LoopThread:
    """A running event loop in a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def in_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self.thread

    def run(self, coro: Awaitable[T], timeout: Optional[float] = None) -> T:
        """Run ``coro`` on the loop and wait for its result (never call it from the loop thread).

        :raises TimeoutError: after ``timeout``; the coroutine is cancelled."""
        if self.in_loop:
            raise RuntimeError(f"{self.name}: run() from the loop thread would deadlock")
        fut: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            fut.cancel()
            raise TimeoutError(f"{self.name}: no result within {timeout}s") from None

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread soon (thread-safe, does not wait)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (pending callbacks are dropped) and wait for its thread."""
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed in between
            return
        if not self.in_loop:
            self.thread.join(timeout)


_shared: ProcessLocalDict[str, LoopThread] = ProcessLocalDict()


def shared_loop(name: str) -> LoopThread:
    """The loop thread called ``name`` of this process, started on first use."""
    return _shared.get_or_create(name, lambda: LoopThread(name))
