"""Threads that run blocking request handlers (a ``sync_call`` waits for the user's function) for a server
transport's event loop.

Lighter than ``ThreadPoolExecutor.submit`` / ``loop.run_in_executor``: a job is a tuple on a C
``SimpleQueue``, with no ``concurrent.futures.Future`` (a Condition and its lock per job) and, for
:meth:`HandlerThreads.run_async`, no second future chained to it. On loopback that hop is a large part of a
``sync_call``'s cost. Threads start on demand up to ``size``; beyond that, jobs wait for a free thread.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, Optional

logger = logging.getLogger("funboost.transport")

__all__ = ["HandlerThreads"]


def _settle(fut: "asyncio.Future[Any]", result: Any, error: Optional[BaseException]) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class HandlerThreads:
    """Up to ``size`` daemon threads named ``<name>-<n>`` running submitted jobs."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: "queue.SimpleQueue[Optional[tuple[Callable[..., Any], tuple]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a handler thread; nothing waits for it (an exception is logged)."""
        self._jobs.put((fn, args))
        if self._idle == 0 and self._threads < self._size:  # racy read: at worst one thread too many/late
            with self._lock:
                if self._threads < self._size and not self._closed:
                    self._threads += 1
                    threading.Thread(target=self._work, daemon=True, name=f"{self._name}-{self._threads}").start()

    def run_async(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """From an event loop: ``await`` the result of ``fn(*args)`` run in a handler thread."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.submit(self._for_loop, loop, fut, fn, args)
        return fut

    @staticmethod
    def _for_loop(loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[Any]", fn: Callable[..., Any],
                  args: tuple) -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(_settle, fut, result, error)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            with lock:
                self._idle += 1
            job = jobs.get()
            with lock:
                self._idle -= 1
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception:  # a job handles its own errors; this is a bug, never the end of the thread
                logger.exception("funboost transport: handler %r failed", fn)

    def shutdown(self) -> None:
        """Let every thread finish its current job and exit (does not wait)."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._jobs.put(None)
