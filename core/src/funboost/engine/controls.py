"""Task controls applied between fetch and execution: rate, run-time window, expiry, filter keys,
backoff and killable calls. Each is small and testable on its own."""
from __future__ import annotations

import ctypes
import datetime as dt
import json
import threading
import time
from typing import Any, Callable, Optional

from funboost.exceptions import FunctionTimeoutError
from funboost.utils.private_random import rng


_INF = float("inf")


class RateLimiter:
    """Holds a rate of ``qps`` starts per second, however long each task runs (the pool grows to keep
    up). Scheduling is by absolute due times, so sleep overshoot does not accumulate; after an idle
    spell at most ``burst`` starts happen back to back."""

    def __init__(self, qps: Optional[float], burst: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock = clock  # injectable for tests: a fake clock whose sleep advances it
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0
        self._generation = 0  # bumped by every rate change: a waiter re-books its slot under the new rate
        self.burst = burst
        self.qps: Optional[float] = None
        self.interval = 0.0
        self.set_rate(qps)

    def set_rate(self, qps: Optional[float]) -> None:
        # NaN and infinity mean no limit here (an infinite rate cannot size a fetch: int(inf) raises)
        qps = qps if qps and 0 < qps < _INF else None
        interval = 1.0 / qps if qps else 0.0
        with self._lock:
            if interval == self.interval:
                return
            if interval < self.interval or not interval:
                # a higher rate applies now: the slots booked under the slower one are given back (a change
                # from qps 0.02 to 10 waited out the old 50 s slot)
                self._next = min(self._next, self._clock())
            self.qps, self.interval = qps, interval
            self._generation += 1

    def acquire(self, stop: Optional[threading.Event] = None) -> bool:
        """Block until the next start is allowed. False if ``stop`` was set while waiting."""
        if not self.qps:
            return True
        with self._lock:
            if not self.qps:  # (changed meanwhile)
                return True
            now = self._clock()
            earliest = now - self.interval * (self.burst - 1)
            if self._next < earliest:
                self._next = earliest
            due = self._next
            self._next = due + self.interval
            generation = self._generation
        wait = due - self._clock()
        if wait > 0:
            if stop is not None:
                # wake in slices so a stop / rate change is noticed during long waits (qps=0.01)
                while wait > 0:
                    if stop.wait(min(wait, 0.5)):
                        return False
                    if self._generation != generation:  # the rate changed: book a slot under the new one
                        return self.acquire(stop)
                    wait = due - self._clock()
            else:
                self._sleep(wait)
        return True


class CronWindow:
    """``allow_run_time_cron``: messages run only while the current minute matches the cron expression."""

    def __init__(self, expression: str) -> None:
        from croniter import croniter
        if not croniter.is_valid(expression):
            raise ValueError(f"allow_run_time_cron: invalid cron expression {expression!r}")
        self.expression = expression
        self._cache_minute: Optional[dt.datetime] = None
        self._cache_value = True

    def is_open(self, now: Optional[dt.datetime] = None) -> bool:
        from croniter import croniter
        now = (now or dt.datetime.now()).replace(second=0, microsecond=0)
        if now != self._cache_minute:
            self._cache_minute = now
            self._cache_value = croniter.match(self.expression, now)
        return self._cache_value

    def seconds_until_check(self, now: Optional[dt.datetime] = None) -> float:
        """Seconds until the next minute starts (when :meth:`is_open` may change), at least 0.2."""
        now = now or dt.datetime.now()
        return max(0.2, 60 - now.second - now.microsecond / 1e6)


class DailyBlackout:
    """The original funboost's ``do_not_run_by_specify_time=('10:00:00', '22:00:00')`` (with
    ``is_do_not_run_by_specify_time_effect=True``): no message starts between these two local times of
    day, bounds included; a start later than the end spans midnight."""

    def __init__(self, start: str, end: str) -> None:
        self.start, self.end = start, end

    def is_open(self, now: Optional[dt.datetime] = None) -> bool:
        t = (now or dt.datetime.now()).strftime("%H:%M:%S")
        if self.start <= self.end:
            return not (self.start <= t <= self.end)
        return not (t >= self.start or t <= self.end)

    def seconds_until_check(self, now: Optional[dt.datetime] = None) -> float:
        now = now or dt.datetime.now()
        return max(0.2, 1 - now.microsecond / 1e6)  # the bounds are whole seconds


class AllWindows:
    """Several run-time windows at once: open while every one is."""

    def __init__(self, *windows: Any) -> None:
        self.windows = windows

    def is_open(self, now: Optional[dt.datetime] = None) -> bool:
        return all(w.is_open(now) for w in self.windows)

    def seconds_until_check(self, now: Optional[dt.datetime] = None) -> float:
        return min(w.seconds_until_check(now) for w in self.windows)


def run_time_window(cron: Optional[str], blackout: Optional[tuple[str, str]]) -> Any:
    """The consumer's window from ``allow_run_time_cron`` and the original's do-not-run times (None: always)."""
    windows = ([CronWindow(cron)] if cron else []) + ([DailyBlackout(*blackout)] if blackout else [])
    if not windows:
        return None
    return windows[0] if len(windows) == 1 else AllWindows(*windows)


def filter_key(kwargs: dict, filter_str: Optional[str] = None) -> str:
    """The dedup key: a custom string, or the sorted-keys JSON of the function's arguments."""
    if filter_str:
        return str(filter_str)
    return json.dumps(kwargs, sort_keys=True, ensure_ascii=False, default=repr)


def backoff_delay(attempt: int, base: float, multiplier: float, cap: float, jitter: bool) -> float:
    """Exponential backoff after the ``attempt``-th failure (1-based): min(base * mult^(n-1), cap)."""
    delay = min(base * (multiplier ** max(0, attempt - 1)), cap)
    if jitter:
        delay *= rng.uniform(0.5, 1.5)
    return max(0.0, delay)


def _async_raise(thread: threading.Thread, exc_type: type) -> bool:
    """Raise ``exc_type`` inside ``thread`` at its next bytecode (CPython)."""
    tid = thread.ident
    if tid is None:
        return False
    res = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(exc_type))
    if res > 1:  # should not happen; undo
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        return False
    return res == 1


class KillableCall:
    """Runs a call in its own thread so it can be stopped by a timeout or a remote kill. The caller
    waits; the context (``fct``) is copied into the thread."""

    def __init__(self, fn: Callable[[], Any], name: str = "funboost-killable") -> None:
        import contextvars
        self._ctx = contextvars.copy_context()
        self._fn = fn
        self._done = threading.Event()
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._target, name=name, daemon=True)

    def _target(self) -> None:
        try:
            self._result = self._ctx.run(self._fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self._error = exc
        finally:
            self._done.set()

    def run(self, timeout: Optional[float], should_kill: Optional[Callable[[], Optional[BaseException]]] = None,
            poll: float = 0.2) -> Any:
        self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = poll if should_kill is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                wait = left if wait is None else min(wait, left)
            if self._done.wait(max(0.0, wait) if wait is not None else None):
                break
            if deadline is not None and time.monotonic() >= deadline:
                self._stop(FunctionTimeoutError)
                raise FunctionTimeoutError(f"function ran longer than function_timeout={timeout}s and was stopped")
            if should_kill is not None:
                exc = should_kill()
                if exc is not None:
                    self._stop(type(exc))
                    raise exc
        if self._error is not None:
            raise self._error
        return self._result

    def _stop(self, exc_type: type) -> None:
        _async_raise(self._thread, exc_type)
        # give it a moment to unwind so the worker pool sees the slot free and healthy
        self._done.wait(1.0)
