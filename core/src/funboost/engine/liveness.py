"""Liveness: one background ticker per process, and the consumer lease that list-like brokers use for crash
reclaim.

The ticker
----------
Heartbeats must keep going however long tasks run, so they run on a thread of their own. Rather than one
such thread per broker instance and per consumer, one daemon thread per process (:func:`ticker`) calls every
registered callback at its interval: the engine consumer's heartbeat to the state backend, the sqlite
broker's lease renewal, the redis brokers' heartbeat keys and their reclaim passes.

- A callback is held weakly when it is a bound method: a broker that is garbage collected stops ticking.
- A callback that raises is logged (at most one line per ``log_every`` seconds per callback) and tried again
  after ``retry_after`` seconds, not after a whole interval: a lease may be close to expiry.
- Callbacks must be short (one round trip): they share one thread.
- Threads do not survive ``fork``: a forked child starts with an empty ticker; its consumers register again.

The consumer lease (crash reclaim for list-like brokers)
-------------------------------------------------------
A list-like broker (sqlite, redis lists, postgres, mysql ...) marks each fetched message with the fetching
consumer's id. If that process dies the message must come back, but *not* while a living consumer is still
running a long task (a fixed visibility timeout would hand it to a second consumer). Liveness does that:

1. before it marks any message with its id, a consumer writes its lease (id, host, pid, last seen);
2. the ticker renews the lease every ``heartbeat_interval`` seconds, independent of task durations;
3. every ``reclaim_interval`` seconds some consumer of the queue puts back the in-flight messages of
   holders whose lease is older than ``heartbeat_timeout`` (or missing), or that ran on this host in a
   process that no longer exists (:func:`pid_gone`: an immediate verdict after ``kill -9``);
4. on close a consumer drops its lease (and gives back unacked work, or leaves the lease to expire while
   it still holds some, so that nothing a task of this process may still run is handed out twice);
5. a forked child takes a new consumer id: the parent's in-flight work stays the parent's.

:class:`ConsumerLease` does the bookkeeping (identity, fork, ticker registration, the death verdict); the
broker writes the storage side: ``renew`` (upsert the lease row/key) and ``reclaim`` (find dead holders with
:meth:`ConsumerLease.dead_holders` and put their messages back, in one transaction). See
docs/writing-a-broker-plugin.md, "Crash reclaim for list-like brokers".
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from pydantic import BaseModel, Field, model_validator

from funboost.logs import ThrottledLog
from funboost.process_local import fork_generation

logger = logging.getLogger("funboost.liveness")

__all__ = ["Ticker", "Tick", "ticker", "LivenessOptions", "LeaseInfo", "ConsumerLease", "HOST_KEY",
           "pid_gone"]


# ===================================================================================== the ticker
class Tick:
    """One registration on the :class:`Ticker`; :meth:`cancel` stops it."""

    __slots__ = ("_fn", "_ref", "interval", "retry_after", "name", "next_due", "cancelled", "failure_log",
                 "_ticker", "__weakref__")

    def __init__(self, ticker: "Ticker", fn: Callable[[], object], interval: float, retry_after: float,
                 name: str, log_every: float) -> None:
        self._ticker = ticker
        if interval <= 0:
            raise ValueError("interval must be > 0")
        # a bound method is held weakly: its owner's lifetime is not extended by the ticker
        self._ref: Optional[weakref.WeakMethod] = None
        self._fn: Optional[Callable[[], object]] = None
        if hasattr(fn, "__self__") and hasattr(fn, "__func__"):
            self._ref = weakref.WeakMethod(fn)  # type: ignore[arg-type]
        else:
            self._fn = fn
        self.interval = interval
        self.retry_after = retry_after
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        self.next_due = 0.0  # set by the ticker, on its clock
        self.cancelled = False
        # a failing callback (an outage) warns at most once per log_every seconds, on the ticker's clock
        self.failure_log = ThrottledLog(logger, log_every, clock=ticker._clock)

    def callback(self) -> Optional[Callable[[], object]]:
        return self._ref() if self._ref is not None else self._fn

    def cancel(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop calling; with ``wait``, also wait (up to ``timeout``) for a call in progress to end, so that
        nothing this tick does happens after ``cancel`` returns (e.g. a renewal after a lease was deleted)."""
        self._ticker.cancel(self, wait=wait, timeout=timeout)


class Ticker:
    """Calls registered callbacks periodically from one daemon thread (started on first use)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, autostart: bool = True) -> None:
        """:param clock: monotonic seconds; :param autostart: False for tests that drive :meth:`run_due`
        themselves (with a fake clock) instead of the background thread."""
        self._clock = clock
        self._autostart = autostart
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a callback returns
        self._ticks: list[Tick] = []
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._running: Optional[Tick] = None  # the tick whose callback runs now

    def every(self, interval: float, fn: Callable[[], object], *, first_after: Optional[float] = None,
              retry_after: float = 0.2, name: str = "", log_every: float = 5.0) -> Tick:
        """Call ``fn()`` every ``interval`` seconds (first after ``first_after``, default ``interval``).

        :param retry_after: after ``fn`` raised, call it again this soon (capped by ``interval``).
        :param log_every: at most one warning per this many seconds while ``fn`` keeps failing.
        """
        tick = Tick(self, fn, interval, min(retry_after, interval), name, log_every)
        tick.next_due = self._clock() + (interval if first_after is None else first_after)
        with self._lock:
            self._ticks.append(tick)
            if self._autostart and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="funboost-liveness", daemon=True)
                self._thread.start()
        self._wake.set()
        return tick

    def cancel(self, tick: Optional[Tick], *, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop ``tick``; see :meth:`Tick.cancel`."""
        if tick is None:
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            tick.cancelled = True
            try:
                self._ticks.remove(tick)
            except ValueError:
                pass
            if wait and threading.current_thread() is not self._thread:
                while self._running is tick and time.monotonic() < deadline:
                    self._idle.wait(deadline - time.monotonic())

    def __len__(self) -> int:
        with self._lock:
            return len(self._ticks)

    def run_due(self) -> float:
        """Run the callbacks that are due now; return the clock value of the next due one. The thread
        calls this in a loop; tests may call it directly with an injected clock."""
        now = self._clock()
        with self._lock:
            ticks = list(self._ticks)
        next_due = now + 1.0
        for tick in ticks:
            if tick.cancelled:
                continue
            if now >= tick.next_due:
                fn = tick.callback()
                if fn is None:  # its owner was garbage collected
                    self.cancel(tick, wait=False)
                    continue
                tick.next_due = now + tick.interval
                with self._lock:
                    if tick.cancelled:
                        continue
                    self._running = tick
                try:
                    fn()
                except Exception as exc:  # an outage must not kill the thread (or the other callbacks)
                    tick.next_due = now + tick.retry_after
                    tick.failure_log("%s failed: %s: %s (retrying)", tick.name, type(exc).__name__, exc)
                finally:
                    with self._lock:
                        self._running = None
                        self._idle.notify_all()
                del fn
            next_due = min(next_due, tick.next_due)
        return next_due

    def _run(self) -> None:
        while True:
            self._wake.clear()
            next_due = self.run_due()
            with self._lock:
                if not self._ticks:  # nothing to drive: let the thread end (every() starts a new one)
                    self._thread = None
                    return
            self._wake.wait(max(0.005, next_due - self._clock()))


_ticker = Ticker()


def ticker() -> Ticker:
    """The process's ticker (a forked child gets a new, empty one)."""
    return _ticker


def _new_ticker_in_child() -> None:
    # threads do not survive fork; the child's consumers register again when they start
    global _ticker
    _ticker = Ticker()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_ticker_in_child)


# ===================================================================================== the lease
def _host_key() -> str:
    """Names this host *and* pid namespace, so a pid is only checked where it means the same process."""
    key = socket.gethostname()
    try:
        key += "/" + os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return key


HOST_KEY: str = _host_key()


def pid_gone(pid: int) -> bool:
    """True if no process ``pid`` runs on this host (a zombie counts as gone). POSIX only: on Windows
    ``os.kill`` would terminate the process, so there liveness relies on lease expiry alone."""
    if os.name != "posix" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, owned by someone else
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


class LivenessOptions(BaseModel):
    """The liveness settings of a list-like broker; a broker's options model may inherit them (with
    :class:`funboost.plugins.broker.BrokerOptions` first)."""

    heartbeat_interval: float = Field(2.0, gt=0, description="seconds between lease renewals")
    heartbeat_timeout: float = Field(
        10.0, gt=0, description="a consumer silent this long is dead: its in-flight messages go back")
    reclaim_interval: Optional[float] = Field(
        None, gt=0, description="how often a consumer looks for dead ones (default: heartbeat_interval)")
    check_pid: bool = Field(
        True, description="on the same host, a consumer whose process is gone is dead at once")

    @model_validator(mode="after")
    def _check_liveness(self) -> "LivenessOptions":
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must be at least twice heartbeat_interval")
        return self


@dataclass(frozen=True)
class LeaseInfo:
    """What a broker stores per consumer lease (one row or key)."""

    consumer_id: str
    host: str  #: :data:`HOST_KEY` of the consumer's host
    pid: int
    last_seen: float  #: wall-clock time (``time.time()``) of the last renewal


class ConsumerLease:
    """The liveness of one consumer of a list-like broker: its identity (renewed after fork), the lease
    renewal and reclaim passes on the process's :func:`ticker`, and the verdict on other holders.

    :param queue_name: for log lines and new consumer ids.
    :param consumer_id: this consumer's id (the broker's ``consumer_id``).
    :param heartbeat_interval: seconds between calls of ``renew``.
    :param heartbeat_timeout: a lease not renewed for this long is dead.
    :param renew: writes this consumer's lease (``info``) to the broker's storage; called from the ticker.
    :param reclaim: optional; puts back the in-flight work of dead holders and returns how many messages
        it moved; called from the ticker every ``reclaim_interval`` seconds. A broker that reclaims inline
        (e.g. inside its fetch transaction) passes None and asks :meth:`reclaim_due` instead.
    :param check_pid: see :class:`LivenessOptions`.
    :param new_id: makes a new consumer id in a forked child (default: ``new_consumer_id(queue_name)``).
    """

    def __init__(self, queue_name: str, consumer_id: str, *, heartbeat_interval: float,
                 heartbeat_timeout: float, renew: Callable[["LeaseInfo"], None],
                 reclaim: Optional[Callable[[], object]] = None, reclaim_interval: Optional[float] = None,
                 check_pid: bool = True, new_id: Optional[Callable[[str], str]] = None,
                 on_new_identity: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        if heartbeat_timeout < 2 * heartbeat_interval:
            raise ValueError("heartbeat_timeout must be at least twice heartbeat_interval")
        self.queue_name = queue_name
        self.consumer_id = consumer_id
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.reclaim_interval = reclaim_interval or heartbeat_interval
        self.check_pid = check_pid
        self._renew = renew
        self._reclaim = reclaim
        self._new_id = new_id
        self._on_new_identity = on_new_identity
        self._clock = clock
        self._lock = threading.Lock()
        self._gen = fork_generation()
        self._ticks: list[Tick] = []
        self._ticker: Optional[Ticker] = None
        self.started_at = clock()
        self.last_renewed = 0.0
        self._next_reclaim = 0.0  # the first reclaim_due() is true: a restarted consumer recovers at once

    # ------------------------------------------------------------------ identity
    def check_fork(self) -> bool:
        """In a forked child: take a new consumer id and forget the parent's registration. True if so."""
        gen = fork_generation()
        if gen == self._gen:
            return False
        self._gen = gen
        self._lock = threading.Lock()
        self._ticks, self._ticker = [], None
        self.last_renewed, self._next_reclaim = 0.0, 0.0
        if self._new_id is not None:
            self.consumer_id = self._new_id(self.queue_name)
        else:
            from funboost.plugins.broker import new_consumer_id

            self.consumer_id = new_consumer_id(self.queue_name)
        if self._on_new_identity is not None:
            self._on_new_identity(self.consumer_id)
        return True

    def info(self, now: Optional[float] = None) -> LeaseInfo:
        """This consumer's lease as it should be stored now."""
        self.check_fork()
        return LeaseInfo(self.consumer_id, HOST_KEY, os.getpid(), self._clock() if now is None else now)

    # ------------------------------------------------------------------ ticker
    @property
    def running(self) -> bool:
        return bool(self._ticks) and self._ticker is ticker() and fork_generation() == self._gen

    def start(self, *, renew_now: bool = True) -> None:
        """Renew now (unless ``renew_now`` is False) and keep renewing (and reclaiming) from the ticker.
        Idempotent; call it again after a fork."""
        self.check_fork()
        with self._lock:
            if self.running:
                return
            t = ticker()
            self._ticker = t
            self._ticks = [t.every(self.heartbeat_interval, self.renew,
                                   name=f"lease renewal of {self.queue_name!r}")]
            if self._reclaim is not None:
                self._ticks.append(t.every(self.reclaim_interval, self._reclaim_from_ticker,
                                           name=f"reclaim pass of {self.queue_name!r}"))
        if renew_now:
            self.renew()

    def stop(self) -> None:
        """Stop renewing (the broker then deletes its lease, or lets it expire)."""
        with self._lock:
            ticks = self._ticks
            self._ticks, self._ticker = [], None
        for tick in ticks:
            tick.cancel(wait=True)

    def renew(self, now: Optional[float] = None) -> None:
        """Write the lease now (the ticker calls this every ``heartbeat_interval``)."""
        info = self.info(now)
        self._renew(info)
        self.last_renewed = info.last_seen

    def renew_due(self, now: Optional[float] = None) -> bool:
        """True when the lease should be written before marking messages (never written, or half an
        interval old): a broker may renew inline, inside its fetch transaction."""
        now = self._clock() if now is None else now
        return self.check_fork() or self.last_renewed == 0.0 or \
            now - self.last_renewed >= self.heartbeat_interval / 2

    def mark_renewed(self, now: float) -> None:
        """Record an inline renewal (one the broker wrote itself, e.g. inside its fetch transaction)."""
        self.last_renewed = now

    def reclaim_due(self, now: Optional[float] = None, *, consume: bool = True) -> bool:
        """For brokers that reclaim inline: True at most once per ``reclaim_interval`` (first call: True).
        With ``consume=False`` only asks, without scheduling the next pass."""
        now = self._clock() if now is None else now
        self.check_fork()
        if now >= self._next_reclaim:
            if consume:
                self._next_reclaim = now + self.reclaim_interval
            return True
        return False

    def restart_reclaim_schedule(self) -> None:
        """The next :meth:`reclaim_due` is True (e.g. a closed broker used again)."""
        self._next_reclaim = 0.0

    def _reclaim_from_ticker(self) -> None:
        if self._reclaim is not None:
            self._reclaim()

    # ------------------------------------------------------------------ verdict
    def is_dead(self, lease: Optional[LeaseInfo], now: Optional[float] = None) -> bool:
        """The verdict on another holder: no lease, a lease older than ``heartbeat_timeout``, or (with
        ``check_pid``) a lease from this host whose process is gone."""
        if lease is None:
            return True
        now = self._clock() if now is None else now
        if lease.last_seen < now - self.heartbeat_timeout:
            return True
        return self.check_pid and lease.host == HOST_KEY and pid_gone(lease.pid)

    def dead_holders(self, holders: Iterable[str], leases: Mapping[str, LeaseInfo],
                     now: Optional[float] = None) -> list[str]:
        """Which of ``holders`` (consumer ids that hold in-flight messages) are dead; ``leases`` maps the
        ids that have a lease to it. This consumer itself is alive by definition."""
        self.check_fork()
        now = self._clock() if now is None else now
        return [h for h in holders if h != self.consumer_id and self.is_dead(leases.get(h), now)]
