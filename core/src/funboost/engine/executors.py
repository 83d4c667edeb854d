"""Executors: where task attempts run. One per consumer, chosen by ``concurrent_mode``.

Every executor tracks how many tasks it holds (queued + running) so that the dispatcher only fetches
what can start soon (bounded prefetch / backpressure): ``free_capacity()`` and ``wait_for_capacity()``.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Awaitable, Callable, Optional

logger = logging.getLogger("funboost.engine")


class Executor:
    """Base: capacity accounting shared by all modes."""

    is_async = False

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._held = 0  # submitted and not finished
        # free slots the waiting threads need (the dispatcher, a stop()): a finished task wakes them only
        # once the smallest of these is free, not at every task (one Condition.notify_all per message
        # was a measurable share of a light task's cost)
        self._needs: list[int] = []
        self._waiters = 0
        self._wake_at_free = 0  # max_workers + 1 while nobody waits: never reached
        self._mutex = threading.Lock()  # guards the counts; subclasses may use it for their own bookkeeping
        self._cond = threading.Condition(self._mutex)

    def free_capacity(self) -> int:
        return self.max_workers - self._held

    def _wait_locked(self, need: int, timeout: float) -> None:
        """Wait (the lock held) until ``need`` slots may be free or ``timeout`` passed."""
        needs = self._needs
        needs.append(need)
        self._waiters = len(needs)
        self._wake_at_free = min(needs)
        try:
            self._cond.wait(timeout)
        finally:
            needs.remove(need)
            self._waiters = len(needs)
            self._wake_at_free = min(needs) if needs else 0

    def _notify_if_wanted_locked(self) -> None:
        """After a task finished (the lock held): wake the waiters when what they wait for is free."""
        if self._waiters and self.max_workers - self._held >= self._wake_at_free:
            # woken once: the tasks that finish before they run again need not notify (each waiter
            # counts itself in again when it waits again)
            self._waiters = 0
            self._cond.notify_all()

    def wait_for_capacity(self, timeout: float) -> bool:
        with self._cond:
            if self._held < self.max_workers:
                return True
            self._wait_locked(1, timeout)
            return self._held < self.max_workers

    def wait_for_free(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` slots are free (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        count = min(count, self.max_workers)
        with self._cond:
            while self.max_workers - self._held < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wait_locked(count, left)
            return True

    def wait_idle(self, timeout: float) -> bool:
        return self.wait_for_free(self.max_workers, timeout)

    def hold_slot(self) -> None:
        """Count one task as running, free slot or not (the pool's own submit; an inline run of a foreign
        worker): ``stop()`` waits for it and the dispatcher fetches with it in mind. Given back with
        :meth:`release_slot`."""
        with self._cond:
            self._held += 1

    def try_hold(self) -> bool:
        """Take one slot for a task run outside the pool (a transport's inline call) if one is free; the
        caller gives it back with :meth:`release_slot`. Counted like the pool's tasks: the dispatcher fetches, and
        ``stop()`` waits, with it in mind."""
        with self._cond:
            if self._held >= self.max_workers:
                return False
            self._held += 1
            return True

    def release_slot(self) -> None:
        with self._cond:
            self._held -= 1
            self._notify_if_wanted_locked()

    def wait_for_room(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Block until a slot is free or ``stop`` is set (inline runs may have taken every slot after the
        dispatcher fetched a task: waiting here keeps no more than ``max_workers`` tasks running)."""
        while not self.wait_for_capacity(poll) and not stop.is_set():
            pass

    @property
    def held(self) -> int:
        """Tasks submitted and not finished (queued + running)."""
        return self._held

    def take_pending(self) -> list[Any]:
        """Remove the submitted tasks that have not started and return their first arguments (the engine's
        tasks), so that a stopping consumer hands their messages back at once. Executors that start
        every submitted task at once have none."""
        return []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError

    def shutdown(self, wait: bool = True) -> None:
        pass


class FlexibleThreadPool(Executor):
    """Threads are started on demand up to ``max_workers`` and exit after ``idle_timeout`` seconds
    without work, so a pool sized for bursts costs nothing when quiet."""

    def __init__(self, max_workers: int, idle_timeout: float = 30.0, name: str = "funboost") -> None:
        super().__init__(max_workers)
        self._work: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self._idle_timeout = idle_timeout
        self._threads = 0
        self._idle = 0
        self._name = name
        # one lock for the held count (base class) and the thread bookkeeping: one acquire per submit and
        # one per finished task
        self._lock = self._mutex
        self._shutdown = False
        #: set by the consumer when the broker's fetch is local (never blocks): a thread that runs out of
        #: tasks calls it to submit the next ones itself before it sleeps (see Consumer.refill)
        self.refill: Optional[Callable[[], int]] = None
        self._refilling = False  # one thread at a time refills

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._shutdown:
            raise RuntimeError("executor is shut down")
        self._work.put((fn, args))
        with self._lock:
            self._held += 1
            if self._idle > 0:
                self._idle -= 1  # that idle worker will pick it up
                return
            if self._threads >= self.max_workers:
                return
            self._threads += 1
            n = self._threads
        threading.Thread(target=self._worker, name=f"{self._name}-{n}", daemon=True).start()

    def _worker(self) -> None:
        get = self._work.get
        lock = self._lock
        timeout = self._idle_timeout
        get_nowait = self._work.get_nowait
        while True:
            try:
                if self.refill is not None and not self._refilling:
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        self._refill()
                        item = get(timeout=timeout)
                else:
                    item = get(timeout=timeout)
            except queue.Empty:
                with lock:
                    if self._idle > 0:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue  # an item was promised to us; it will arrive
            if item is None:
                with lock:
                    self._threads -= 1
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # the runner catches everything; this is a last resort
                logger.exception("uncaught error in worker thread")
            with lock:
                self._held -= 1
                self._idle += 1
                if self._waiters:  # only the dispatcher or a stop() ever waits
                    self._notify_if_wanted_locked()

    def _refill(self) -> None:
        """Out of tasks: let the consumer submit the next ones (what this thread submits is taken by it or
        by another idle thread, as any submit)."""
        with self._lock:
            if self._refilling:
                return
            self._refilling = True
        try:
            self.refill()  # type: ignore[misc]
        except Exception:
            logger.exception("refilling the pool failed")
        finally:
            self._refilling = False

    def take_pending(self) -> list[Any]:
        taken: list[Any] = []
        keep: list[Optional[tuple]] = []
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is None or not item[1]:
                keep.append(item)  # a worker's stop sentinel stays
            else:
                taken.append(item[1][0])
        for item in keep:
            self._work.put(item)
        if taken:
            with self._lock:
                self._held -= len(taken)
                self._notify_if_wanted_locked()
        return taken

    def shutdown(self, wait: bool = True) -> None:
        self._shutdown = True
        with self._lock:
            n = self._threads
        for _ in range(n):
            self._work.put(None)
        if wait:
            self.wait_idle(30)

    @property
    def thread_count(self) -> int:
        return self._threads


class SoloExecutor(Executor):
    """Runs each task inline in the dispatch thread: strict one-at-a-time, no prefetch."""

    def __init__(self) -> None:
        super().__init__(1)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.hold_slot()
        try:
            fn(*args)
        finally:
            self.release_slot()


class AsyncioExecutor(Executor):
    """One event loop in a dedicated thread runs up to ``max_workers`` coroutines at once. ``submit``
    takes a coroutine function; sync helpers (ack, state writes) are done by the runner in the loop's
    default executor so they never block the loop."""

    is_async = True

    def __init__(self, max_workers: int, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        super().__init__(max_workers)
        if loop is None:
            loop = asyncio.new_event_loop()
            self._own_loop = True
        else:
            self._own_loop = False
        self.loop = loop
        if not loop.is_running():
            t = threading.Thread(target=self._run_loop, name="funboost-asyncio", daemon=True)
            t.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.hold_slot()

        async def _run() -> None:
            try:
                await fn(*args)
            except asyncio.CancelledError:  # cut off by shutdown: its message stays unacknowledged
                pass
            except BaseException:
                logger.exception("uncaught error in asyncio task")
            finally:
                self.release_slot()

        asyncio.run_coroutine_threadsafe(_run(), self.loop)

    def shutdown(self, wait: bool = True) -> None:
        if wait:
            self.wait_idle(30)
        if not self._own_loop or not self.loop.is_running():
            return

        async def cancel_then_stop() -> None:
            # Coroutines still running are cancelled here, on their loop, so that their ``finally`` blocks run
            # in their own context; a loop stopped under them left them to the garbage collector at exit
            # (a traceback per task from a context variable reset in another context, then "Task was
            # destroyed but it is pending!").
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
            # no loop.stop() here: the loop would end before the callback that hands this coroutine's result
            # to the waiting thread runs, and result() below would always wait out its whole timeout

        try:
            done = asyncio.run_coroutine_threadsafe(cancel_then_stop(), self.loop)
            done.result(timeout=3.0)
        except Exception:  # noqa: BLE001 - the loop closed meanwhile, or a task ignores its cancellation
            pass
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # the loop is closed already
            pass


class GreenletExecutor(Executor):
    """gevent or eventlet pool. The program must monkey-patch before importing anything else."""

    def __init__(self, max_workers: int, flavour: str) -> None:
        super().__init__(max_workers)
        self.flavour = flavour
        if flavour == "gevent":
            try:
                import gevent.monkey
                import gevent.pool
            except ImportError as exc:
                raise RuntimeError("concurrent_mode='gevent' needs gevent: pip install gevent") from exc
            if not gevent.monkey.is_module_patched("threading"):
                raise RuntimeError(
                    "concurrent_mode='gevent' requires 'from gevent import monkey; monkey.patch_all()' as the "
                    "very first lines of your program's entry script (before importing funboost or your tasks)")
            self._pool = gevent.pool.Pool(max_workers)
        else:
            try:
                import eventlet
                import eventlet.patcher
            except ImportError as exc:
                raise RuntimeError("concurrent_mode='eventlet' needs eventlet: pip install eventlet") from exc
            if not eventlet.patcher.is_monkey_patched("thread"):
                raise RuntimeError(
                    "concurrent_mode='eventlet' requires 'import eventlet; eventlet.monkey_patch()' as the very "
                    "first lines of your program's entry script (before importing funboost or your tasks)")
            self._pool = eventlet.GreenPool(max_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.hold_slot()

        def _run() -> None:
            try:
                fn(*args)
            except BaseException:
                logger.exception("uncaught error in greenlet")
            finally:
                self.release_slot()

        self._pool.spawn(_run)


def make_executor(mode: str, concurrent_num: int, specify_pool: Any = None, loop: Any = None,
                  name: str = "funboost") -> Executor:
    if specify_pool is not None:
        if not isinstance(specify_pool, Executor):
            raise TypeError("specify_concurrent_pool must be a funboost.engine.executors.Executor")
        return specify_pool
    if mode == "threading":
        return FlexibleThreadPool(concurrent_num, name=name)
    if mode == "single_thread":
        return SoloExecutor()
    if mode == "async":
        return AsyncioExecutor(concurrent_num, loop=loop)
    if mode in ("gevent", "eventlet"):
        return GreenletExecutor(concurrent_num, mode)
    raise ValueError(f"unknown concurrent_mode {mode!r}")
