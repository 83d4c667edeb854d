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
    if fut.done():  # cancelled, or answered meanwhile (a call's deadline reply)
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
        self._idle = 0  # threads done with their job and not yet claimed by a submit
        self._backlog = 0  # jobs queued while every thread was busy (at ``size``)
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a handler thread; nothing waits for it (an exception is logged)."""
        self._jobs.put((fn, args))
        # Each job claims an idle thread or starts one, under the lock. Reading the idle count without
        # claiming (as an earlier version did) let two quick submits both count the same idle thread: the
        # second job then waited behind the first, for as long as the first blocked (a call waiting for the
        # user's function), while the server had room for it.
        with self._lock:
            if self._idle:
                self._idle -= 1
                return
            if self._threads >= self._size or self._closed:
                self._backlog += 1  # every thread busy: the job waits for the first one to finish
                return
            self._threads += 1
            n = self._threads
        threading.Thread(target=self._work, daemon=True, name=f"{self._name}-{n}").start()

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
            job = jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception:  # a job handles its own errors; this is a bug, never the end of the thread
                logger.exception("funboost transport: handler %r failed", fn)
            with lock:
                if self._backlog:  # the next get takes a job that found every thread busy
                    self._backlog -= 1
                else:  # free for the next submit to claim (its job may already be queued)
                    self._idle += 1

    def shutdown(self) -> None:
        """Let every thread finish its current job and exit (does not wait)."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._jobs.put(None)
