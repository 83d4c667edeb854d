"""The consumer: one queue in one process.

    broker.fetch (batch, bounded by free capacity)
      -> decode (malformed -> dead-letter with the reason)
      -> controls: kill list, expiry, delay (native or emulated), filter, argument check, qps
      -> executor (threading | asyncio | gevent | eventlet | single_thread)
      -> runner (retries, timeout, requeue / dead-letter)
      -> finish_task: RPC result, status record, stats, hooks, ack (batched)

A control thread refreshes pause / qps / concurrency flags and remote-kill requests from the state
backend, sends heartbeats, and logs throughput every ``stats_log_interval`` seconds.
"""
from __future__ import annotations

import collections
import heapq
from bisect import bisect_left as _bisect_left
import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

from funboost.engine.controls import RateLimiter, filter_key, run_time_window
from funboost.engine.executors import Executor, FlexibleThreadPool, make_executor
from funboost.engine.liveness import ticker
from funboost.engine.metrics import MetricsRecorder
from funboost.engine.runner import Runner, Task
from funboost.engine.setup import ConsumerSetup
from funboost.enums import RunStatus
from funboost.eta import message_eta
from funboost.exceptions import MalformedMessage
from funboost.flags import QueueFlag, concurrency_value, qps_value
from funboost.message import build_envelope, decode, dumps, loads
from funboost.plugins.broker import Broker, Delivery, OutgoingMessage
from funboost.plugins.manager import get_plugin_manager, has_hook_impls
from funboost.records import PLAIN_RUN_STATUS, FunctionResultStatus, StatusBatch
from funboost.timeseries import FLUSH_INTERVAL, HIST_BOUNDS, N_HIST

if TYPE_CHECKING:  # pragma: no cover
    from funboost.state.base import StateBackend

# per-task comparisons use module names: RunStatus.X goes through the enum's metaclass (~70 ns each)
_FINISH, _RUNNING = RunStatus.FINISH, RunStatus.RUNNING
_REQUEUED, _RETRY_LATER, _DEAD_LETTERED = RunStatus.REQUEUED, RunStatus.RETRY_LATER, RunStatus.DEAD_LETTERED

# consumer heartbeats to the state backend (registry, distributed qps); env overrides are for tests
HEARTBEAT_INTERVAL = float(os.environ.get("FUNBOOST_HEARTBEAT_INTERVAL", "5"))
HEARTBEAT_TTL = 3 * HEARTBEAT_INTERVAL
FLAG_POLL_INTERVAL = 1.0
_seq = itertools.count()
FILTER_RECHECK = 0.5  # seconds between checks of a task whose arguments another task is running


def _filter_claim(queue_name: str, key: str) -> str:
    return f"filter-running:{queue_name}:{key}"
_HOSTNAME = socket.gethostname()
_IP: list = []


def _host_ip() -> str:
    """This host's outbound IP (no packet is sent: a UDP connect only picks the route), once per process."""
    if not _IP:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.connect(("10.255.255.255", 1))
                _IP.append(s.getsockname()[0])
            finally:
                s.close()
        except OSError:
            _IP.append("127.0.0.1")
    return _IP[0]


class AckBatcher:
    """Collects finished deliveries and acks them in batches from one thread: batching is where the
    broker round trips are saved. At-least-once is kept: a crash before the flush only means the
    message runs again.

    The flusher sleeps while nothing waits to be acked (an idle consumer, or a kind whose deliveries ack
    themselves, costs no wake-ups: it used to tick every ``linger``, 100 times a second per consumer);
    the first delivery added wakes it, and it then gives the batch ``linger`` seconds to grow (a full
    batch wakes it at once)."""

    #: the idle flusher also looks at the buffer this often: a safety net only (add() wakes it)
    IDLE_RECHECK = 1.0

    def __init__(self, broker: Broker, logger: logging.Logger, max_batch: int = 500, linger: float = 0.01):
        self.broker = broker
        self.logger = logger
        self.max_batch = max_batch
        self.linger = linger
        # deque.append / popleft are atomic: workers add without taking a lock
        self._buf: "collections.deque[Delivery]" = collections.deque()
        self._wake = threading.Event()
        self._idle = False  # the flusher waits for a first delivery
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="funboost-ack", daemon=True)
        self._thread.start()

    def add(self, d: Delivery) -> None:
        buf = self._buf
        buf.append(d)
        # appended first, then _idle read: the flusher sets _idle before it looks at the buffer a last
        # time, so either it sees this delivery or this sees it idle (no delivery waits for the recheck)
        if (self._idle or len(buf) >= self.max_batch) and not self._wake.is_set():
            self._wake.set()

    def _loop(self) -> None:
        buf, wake = self._buf, self._wake
        while not self._stopped:
            if not buf:
                self._idle = True
                if not buf:
                    wake.wait(self.IDLE_RECHECK)
                self._idle = False
                wake.clear()
                continue
            wake.wait(self.linger)  # let the batch grow; a full one (or stop()) ends the wait early
            wake.clear()
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        n = len(buf)
        if not n:
            return
        popleft = buf.popleft
        batch = [popleft() for _ in range(n)]
        delay = 0.1
        while True:
            try:
                for i in range(0, len(batch), self.max_batch):
                    self.broker.ack(batch[i:i + self.max_batch])
                return
            except Exception as exc:  # a broker outage: keep the acks and retry, never drop them
                if self._stopped and delay > 2:
                    self.logger.error("could not ack %d deliveries at shutdown: %s: %s", len(batch),
                                      type(exc).__name__, exc)
                    return
                self.logger.warning("ack failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(5)
        self.flush()


class StatusSaver:
    """Writes FunctionResultStatus records to the state backend in batches from a background thread.

    When a run is final its record is taken in the compact form (a tuple of values, see
    ``funboost/records.py``) and queued with a lock-free deque append; the status object is then freed. The
    writer thread takes whatever has queued (every 0.2 s, or sooner once ``MAX_BATCH`` records wait) and
    hands it to the backend as one :class:`StatusBatch`, serialised there in one call.

    Measured on the hot path (a trivial task costs ~18 us): queueing the tuple and serialising it with the
    batch costs ~1.3 us per record. Serialising each record on its own when final cost ~2.5 us, and
    keeping each one's bytes until the write ~4 us: the many small buffers that orjson shrinks from a
    larger allocation fragment the heap when they are kept."""

    MAX_BATCH = 1000  # records per write (and per row of the sqlite backend); a full batch wakes the writer

    def __init__(self, consumer: "Consumer") -> None:
        self.consumer = consumer
        conf = consumer.params.function_result_status_persistence_conf
        self.table = conf.table_name or consumer.params.queue_name
        self.ttl = conf.expire_seconds
        self.save_result = conf.is_save_result
        self._rows: "collections.deque[tuple]" = collections.deque()
        self._flush_lock = threading.Lock()  # the background loop and an explicit flush() may overlap
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="funboost-status", daemon=True)
        self._thread.start()

    def add(self, status: FunctionResultStatus) -> None:
        rows = self._rows
        rows.append(status.compact(self.save_result))
        if len(rows) >= self.MAX_BATCH and not self._wake.is_set():  # set() takes a lock: once is enough
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        rows, take = self._rows, self._rows.popleft
        with self._flush_lock:
            while rows:
                batch = StatusBatch([take() for _ in range(min(len(rows), self.MAX_BATCH))])
                try:
                    self.consumer.state.save_status_batch(self.table, batch, self.ttl)
                except Exception as exc:
                    if len(batch) == 1 or not self._save_one_by_one(batch):
                        self.consumer.logger.error("could not save %d status records: %s", len(batch), exc)

    def _save_one_by_one(self, batch: StatusBatch) -> bool:
        """After a failed batch: each record alone, so that one record the backend refuses does not take the
        others with it. False when none could be saved (the backend itself is failing)."""
        lost = 0
        for rec in batch.records:
            try:
                self.consumer.state.save_status_batch(self.table, StatusBatch([rec]), self.ttl)
            except Exception as exc:
                lost += 1
                self.consumer.logger.error("could not save the status record of task %s: %s", rec[0], exc)
        return lost < len(batch)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self.flush()


def _concurrency_flag(value: Any) -> Optional[int]:
    """A stored concurrent_num flag as a usable worker count, else None (unset, or a value below 1 written by
    a careless writer: it stopped the queue for good)."""
    try:
        return None if value is None else concurrency_value(value)
    except ValueError:
        return None


class Stats:
    """Counters for the periodic log line and heartbeats."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # a window's run and failure counts are the totals minus the totals at its start (roll): record
        # updates two counters per run, not four
        self._window_start_runs = 0
        self._window_start_fail = 0
        self.window_cost = 0.0
        self.window_start = time.monotonic()
        self.total_runs = 0
        self.total_fail = 0
        self.last_rate = 0.0
        self.total_cost = 0.0
        # run times for the metrics histogram: the last COST_SAMPLES of them (a lock-free deque append per
        # message); the control thread sorts them into the histogram once a second (snapshot), scaled to
        # the runs of that second, so its work is bounded whatever the rate
        self.costs: "collections.deque[float]" = collections.deque(maxlen=self.COST_SAMPLES)
        self.hist = [0] * N_HIST  # cumulative run-time histogram (funboost.timeseries.HIST_BOUNDS)
        self._hist_runs = 0  # runs already put into hist

    COST_SAMPLES = 1024

    def record(self, success: bool, cost: float) -> None:
        self.costs.append(cost)
        with self.lock:
            self.total_runs += 1
            self.window_cost += cost
            if not success:
                self.total_fail += 1

    @property
    def window_runs(self) -> int:
        return self.total_runs - self._window_start_runs

    @property
    def window_fail(self) -> int:
        return self.total_fail - self._window_start_fail

    def snapshot(self) -> tuple[int, int, float, list[int]]:
        """Cumulative (runs, failures, run time, histogram), for the metrics recorder (one thread)."""
        with self.lock:
            runs, fails, total = self.total_runs, self.total_fail, self.total_cost + self.window_cost
        costs, take, bounds = self.costs, self.costs.popleft, HIST_BOUNDS
        sample: dict[int, int] = {}
        n = 0
        for _ in range(len(costs)):
            i = _bisect_left(bounds, take())
            sample[i] = sample.get(i, 0) + 1
            n += 1
        new_runs = runs - self._hist_runs
        if n and new_runs > 0:
            # the sample's shape scaled to the new runs; largest remainders keep the sum exact
            shares = {i: c * new_runs / n for i, c in sample.items()}
            ints = {i: int(v) for i, v in shares.items()}
            left = new_runs - sum(ints.values())
            for i in sorted(shares, key=lambda i: shares[i] - ints[i], reverse=True)[:left]:
                ints[i] += 1
            for i, c in ints.items():
                self.hist[i] += c
            self._hist_runs = runs
        return runs, fails, total, list(self.hist)

    def roll(self) -> tuple[int, int, float, float]:
        with self.lock:
            elapsed = max(1e-6, time.monotonic() - self.window_start)
            runs, fail, cost = self.window_runs, self.window_fail, self.window_cost
            self.total_cost += cost  # the cumulative run time is kept per window, not per message
            self._window_start_runs, self._window_start_fail = self.total_runs, self.total_fail
            self.window_cost = 0.0
            self.window_start = time.monotonic()
            self.last_rate = runs / elapsed
            return runs, fail, (cost / runs if runs else 0.0), elapsed


class Consumer:
    """The consumer of one queue in one process. It gets what it needs from a :class:`ConsumerSetup`
    (``Booster.consumer_setup()``), not from the booster."""

    def __init__(self, setup: ConsumerSetup) -> None:
        if not isinstance(setup, ConsumerSetup):  # a Booster, as callers passed before ConsumerSetup
            setup = setup.consumer_setup()
        self.setup = setup
        self.params = p = setup.params
        self.logger = setup.logger
        self.started_at = time.time()  # reported in heartbeats
        self.broker: Broker = setup.new_broker()
        self.caps = self.broker.capabilities
        self.consumer_id = self.broker.consumer_id
        self.executor: Executor = make_executor(p.concurrent_mode, p.concurrent_num, p.specify_concurrent_pool,
                                                p.specify_async_loop, name=f"funboost-{p.queue_name}")
        self.runner = Runner(self)
        self.rate = RateLimiter(p.qps)
        self.window = run_time_window(p.allow_run_time_cron, p.do_not_run_by_specify_time
                                      if p.is_do_not_run_by_specify_time_effect else None)
        self.stats = Stats()
        self.metrics = MetricsRecorder(p.queue_name, self.consumer_id, self.stats.snapshot)
        self.last_queue_size: Optional[dict] = None  # the latest sample, reported in heartbeats
        self._qps_setting = p.qps  # the queue's qps (flag or params), before a distributed split
        self._bad_qps = ""  # repr of the last unusable qps flag logged (see _refresh_flags)
        self._catalog_due = 0.0
        self.acker = AckBatcher(self.broker, self.logger)
        self._state: Optional["StateBackend"] = None
        self.status_saver: Optional[StatusSaver] = None
        if p.function_result_status_persistence_conf.is_save_status:
            self.status_saver = StatusSaver(self)
        self.kill_set: set = set()
        self.paused = False
        self._stop = threading.Event()
        self._delayed: list[tuple[float, int, Delivery, Any]] = []  # emulated delay: (eta, seq, delivery, msg)
        self._delayed_lock = threading.Lock()
        self._owns_loop = False  # the broker runs the consume loop itself (run_consumer returned True)
        # a running task's claim on its filter key outlives any run the queue allows (a crashed holder's
        # claim expires; its redelivered message, same task id, takes it again at once)
        self._filter_claim_ttl = max(600.0, 2 * float(p.function_timeout or 0))
        self._fetch_lock = threading.Lock()  # the dispatch loop's and refill's fetch + submit (see refill)
        self._threads: list[threading.Thread] = []
        self._live_consumers = 1
        self._released = 0  # messages handed back to the broker while stopping
        pm_hooks = has_hook_impls("funboost_execute")
        self.execute_hook = get_plugin_manager().hook.funboost_execute if pm_hooks else None
        # the async path's counterpart (pluggy cannot wrap an awaited call): context managers per attempt
        self.execute_context_hook = (get_plugin_manager().hook.funboost_execute_context
                                     if has_hook_impls("funboost_execute_context") else None)
        self._after_execute = has_hook_impls("funboost_after_execute")
        self._on_error = has_hook_impls("funboost_on_error")
        # finishing a successful task is only an ack and maybe a status record: no custom recorder or
        # after-hook
        self._plain_finish = p.user_custom_record_process_info_func is None and not self._after_execute
        # no queue-level expiry or filtering: a message without options of its own
        # (DecodedMessage.has_options) needs no check before it runs but the kill list and its arguments
        self._plain_controls = not p.msg_expire_seconds and not p.do_task_filtering

    # ---------------------------------------------------------------- state backend (lazy)
    @property
    def state(self) -> "StateBackend":
        if self._state is None:
            self._state = self.setup.state_backend()
        return self._state

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        # before any thread or heartbeat: a queue the broker refuses for good (declared with other arguments,
        # missing where it must exist) is an error of consume(), not a consumer that looks alive and runs nothing
        self.broker.prepare_consume()
        self.logger.info("consuming queue %r on broker %r (%s, concurrency %s%s)", self.params.queue_name,
                         self.broker.kind, self.params.concurrent_mode, self.params.concurrent_num,
                         f", qps {self.params.qps}" if self.params.qps else "")
        try:  # flags first, so a paused queue or a killed task is honoured from the first fetch
            self._refresh_flags()
        except Exception as exc:
            self.logger.warning("state backend unavailable: %s", exc)
        # heartbeats run on the process's liveness ticker: never delayed by the control loop's work
        self._heartbeat_tick = ticker().every(HEARTBEAT_INTERVAL, self._heartbeat, first_after=0.0,
                                              retry_after=FLAG_POLL_INTERVAL, name=f"heartbeat of {self.params.queue_name!r}")
        self._start_thread(self._control_loop, "control")
        if self.broker.run_consumer(self):
            self._owns_loop = True  # no dispatch thread: checks that wait, wait in the broker's thread
            return
        if self.broker.fetch_is_local and isinstance(self.executor, FlexibleThreadPool) and self.window is None:
            self.executor.refill = self.refill
        self._start_thread(self._dispatch_loop, "dispatch")

    def _start_thread(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=f"funboost-{self.params.queue_name}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> dict:
        """Stop fetching, hand back what was prefetched and did not start, let running tasks finish (up to
        ``timeout``), flush acks and status records, deregister. Returns what it did (the graceful-shutdown
        summary): ``finished`` running tasks, ``released`` messages handed back, ``unfinished`` tasks still
        running at the deadline."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        running = self.executor.held  # single_thread runs inline in the dispatch thread joined below
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if getattr(self, "_heartbeat_tick", None) is not None:
            self._heartbeat_tick.cancel(wait=True)  # a beat in progress ends before remove_consumer below
        # prefetched and not started: back to the broker now, not after a liveness timeout
        held = [task.delivery for task in self.executor.take_pending()]
        running -= len(held)
        with self._delayed_lock:
            held += [d for _, _, d, _ in self._delayed]
            self._delayed.clear()
        if held:
            try:
                self.broker.requeue(held)
                self._released += len(held)
            except Exception as exc:
                self.logger.error("could not release %d prefetched messages: %s", len(held), exc)
        self.executor.wait_idle(max(0.0, deadline - time.monotonic()))
        unfinished = self.executor.held
        self.acker.stop()
        if self.status_saver:
            self.status_saver.stop()
        if self._state is not None:
            try:  # the last seconds' metrics, so that a short run still shows in the charts
                self.metrics.sample()
                self.metrics.flush(self.state, None)
            except Exception as exc:
                self.logger.warning("could not write the last queue metrics: %s", exc)
        try:
            if self._state is not None:
                self.state.remove_consumer(self.consumer_id)
        except Exception:
            pass
        self.executor.shutdown(wait=False)
        self.broker.close()
        return {"queue": self.params.queue_name, "finished": max(0, running - unfinished), "released": self._released,
                "unfinished": unfinished}

    # ---------------------------------------------------------------- ConsumerHost (funboost.plugins.host)
    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    @property
    def current_qps(self) -> float:
        return float(self.rate.qps or 0.0)

    @property
    def concurrency(self) -> int:
        return 1 if self.params.concurrent_mode == "single_thread" else int(self.params.concurrent_num)

    @property
    def runs_inline(self) -> bool:
        return not self.executor.is_async and self.params.concurrent_mode in ("threading", "single_thread")

    def is_runnable(self) -> bool:
        return not self._stop.is_set() and self.seconds_until_runnable_check() == 0.0

    def seconds_until_runnable_check(self) -> float:
        """The one "may this queue run now?" check (pause flag, run-time window): 0.0 when a task may
        start now, else how long to wait before asking again. ``is_runnable``, ``wait_until_runnable``
        and the dispatch loop all use it."""
        if self.paused:
            return 0.2
        window = self.window
        if window is not None and not window.is_open():
            return max(0.01, min(1.0, window.seconds_until_check()))
        return 0.0

    # ---------------------------------------------------------------- dispatch
    def _fetch_limit(self) -> int:
        free = self.executor.free_capacity()
        if self.params.prefetch_count:
            free = min(free, self.params.prefetch_count)
        if self.rate.qps:
            free = min(free, max(1, int(self.rate.qps)))  # never hold more than ~1 s of work
        return max(0, free)

    # how long the dispatcher may wait for half the pool to free up while a backlog waits (see below)
    GATHER_SECONDS = 0.002

    def _dispatch_loop(self) -> None:
        # a bug or an unexpected value must never end dispatching for good while heartbeats go on (the
        # consumer would look alive and run nothing): log it and go on
        while not self._stop.is_set():
            try:
                self._dispatch_until_stopped()
            except Exception:  # noqa: BLE001
                self.logger.exception("the dispatch loop of %r failed; it goes on in 1 s", self.params.queue_name)
                self._stop.wait(1.0)

    def _dispatch_until_stopped(self) -> None:
        error_delay = 0.5
        backlog = False
        while not self._stop.is_set():
            wait = self.seconds_until_runnable_check()
            if wait:
                self._stop.wait(wait)
                continue
            self._submit_due_delayed()
            if not self.executor.wait_for_capacity(0.5):
                if self.broker.poll_while_busy:
                    try:
                        self.broker.fetch(0, 0.0)
                    except Exception as exc:
                        self.logger.warning("keep-alive poll failed: %s", exc)
                continue
            if backlog and self.executor.max_workers >= 8:
                # the last fetch was full, so more is waiting: let half the pool free up (briefly) and
                # fetch that in one round trip, rather than one round trip per slot that frees
                half = self.executor.max_workers // 2
                if self.executor.free_capacity() < half:
                    self.executor.wait_for_free(half, self.GATHER_SECONDS)
            limit = self._fetch_limit()
            if limit <= 0:
                continue
            timeout = 1.0
            if self._delayed:
                timeout = max(0.0, min(timeout, self._delayed[0][0] - time.time()))
            with self._fetch_lock:  # fetch and submit in one go: tasks reach the pool in fetch order
                try:
                    deliveries = self.broker.fetch(limit, timeout)
                    backlog = len(deliveries) >= limit > 1
                    error_delay = 0.5
                except Exception as exc:
                    self.logger.warning("fetch from %s failed: %s: %s (retrying in %.1fs)", self.broker.kind,
                                        type(exc).__name__, exc, error_delay)
                    self._stop.wait(error_delay)
                    error_delay = min(error_delay * 2, 10)
                    continue
                while deliveries and self.paused and not self._stop.is_set():
                    self._stop.wait(0.2)  # paused during the fetch: hold what arrived, run it on resume
                self._dispatch(deliveries, by_worker=False)

    def refill(self) -> int:
        """Called by a worker thread that ran out of tasks (brokers whose fetch is local, threads mode):
        fetch what the pool has room for without waiting and submit it, as the dispatch loop would.
        With a publisher busy in the same process the dispatch thread gets the GIL only now and then,
        and each time it can hand over no more than the pool's free slots; a worker that refills
        itself keeps running for its whole turn on the GIL. Anything but the plain case (paused, a
        qps limit, delayed messages waiting, stopping, a broker that cannot take a message back) is
        left to the dispatch loop. Returns how many messages it fetched."""
        if self.paused or self.rate.qps or self._delayed or self._stop.is_set() or not self.caps.native_requeue:
            return 0
        # never waits for the lock: the dispatch thread holding it is fetching (or waiting for messages)
        # itself; fetch and submit under it keep tasks in queue order (one thread: strict FIFO)
        if not self._fetch_lock.acquire(blocking=False):
            return 0
        try:
            limit = self._fetch_limit()
            if limit <= 0:
                return 0
            deliveries = self.broker.fetch(limit, 0.0)
            self._dispatch(deliveries, by_worker=True)
            return len(deliveries)
        finally:
            self._fetch_lock.release()

    def _dispatch(self, deliveries: List[Delivery], *, by_worker: bool) -> None:
        """What the dispatch loop and refill do with a fetch's messages: hand each to handle_delivery.
        One fetched as the consumer stops goes back to a broker that takes messages back (any other
        broker: it runs, rather than waiting unacked for a redelivery); one a worker fetched while the
        consumer was paused goes back too (the dispatch loop holds its fetch until resume instead). A
        message that cannot be dispatched is handed back, and the dispatch loop pauses briefly so that
        a failing dependency is not hammered; a worker just returns to its tasks."""
        for d in deliveries:
            stopping = self._stop.is_set()
            if (stopping or (by_worker and self.paused)) and self.caps.native_requeue:
                self._hand_back(d)
                self._released += stopping
                continue
            try:
                self.handle_delivery(d)
            except Exception as exc:  # e.g. the state backend is down: never kill the dispatching thread
                self.logger.error("could not dispatch a message (%s: %s); handing it back to the broker",
                                  type(exc).__name__, exc, exc_info=True)
                self._hand_back(d)
                if not by_worker:
                    self._stop.wait(0.5)

    def handle_delivery(self, d: Delivery) -> None:
        """Decode and apply the controls; then submit the task to the executor."""
        task = self.prepare(d)
        if task is None:
            return
        msg = task.msg
        eta = msg.extra.get("_eta") if msg.has_options else None  # prepare sets _eta only on such messages
        if eta is not None:
            with self._delayed_lock:  # emulated delay: hold it (unacked) until due
                heapq.heappush(self._delayed, (eta, next(_seq), d, task))
            return
        self.submit(task)

    def prepare(self, d: Delivery) -> Optional[Task]:
        p = self.params
        if p.is_show_message_get_from_broker:
            self.logger.debug("got message %r", d.body)
        try:
            msg = decode(d.body)
        except MalformedMessage as exc:
            self._dead_letter_malformed(d, str(exc))
            return None
        extra = msg.extra
        d.task_id = task_id = extra["task_id"]
        task = Task(d, msg)
        if self.kill_set and task_id in self.kill_set:  # (an empty set's lookup still hashes the new id)
            self._finish_without_run(task, RunStatus.KILLED, "killed before it started")
            return None
        if not msg.has_options and self._plain_controls:
            return task if self._convert_args(task) else None  # nothing else applies to this message
        expire = extra.get("msg_expire_seconds", p.msg_expire_seconds)
        if expire and time.time() - float(extra.get("publish_time", time.time())) > float(expire):
            self._finish_without_run(task, RunStatus.EXPIRED, f"message older than msg_expire_seconds={expire}")
            return None
        # delayed message that reached us early (broker without native delay, or clock skew)
        if "eta" in extra or "countdown" in extra:
            eta = message_eta(extra)
            if eta is not None and eta > time.time() + 0.001:
                extra["_eta"] = eta
                return task
        return task if self._after_delay_checks(task) else None

    def _after_delay_checks(self, task: Task) -> bool:
        """Filter and argument checks, done when the task is due (after any delay)."""
        p = self.params
        extra = task.msg.extra
        grace = extra.get("misfire_grace_time")
        if grace is not None:
            due = message_eta(extra)
            late = time.time() - due if due is not None else 0.0
            if late > grace:  # as APScheduler's misfire: a run missed by more than the grace time is skipped
                self._finish_without_run(task, RunStatus.EXPIRED, f"missed its run time by {late:.1f}s "
                                         f"(misfire_grace_time={grace:g})")
                return False
        if extra.get("do_task_filtering", p.do_task_filtering):
            key = task.filter_key = filter_key(task.msg.kwargs, extra.get("filter_str"))
            while True:
                if self.state.filter_contains(p.queue_name, key):
                    self._finish_without_run(task, RunStatus.FILTERED, "same arguments already ran (task filter)")
                    return False
                # the key is recorded when a task succeeds; until then a claim keeps a second task with the same
                # arguments from starting beside it (two pushes taken by two workers both ran)
                if self.state.acquire_lock(_filter_claim(p.queue_name, key), task.task_id, self._filter_claim_ttl):
                    task.filter_claimed = True
                    break
                # another task runs these arguments now: decide once it has finished (filtered if it succeeded)
                if not self._owns_loop:
                    with self._delayed_lock:
                        heapq.heappush(self._delayed, (time.time() + FILTER_RECHECK, next(_seq), task.delivery, task))
                    return False
                if self._stop.wait(FILTER_RECHECK):
                    return False
        return self._convert_args(task)

    def _convert_args(self, task: Task) -> bool:
        """The function's arguments from the message; a message whose arguments do not fit is dead-lettered."""
        try:
            task.kwargs = self.setup.convert_kwargs(task.msg.kwargs)
        except Exception as exc:  # arguments that do not fit the function
            self._dead_letter(task, f"arguments do not fit {self.setup.func_name}: {exc}")
            return False
        return True

    def submit(self, task: Task) -> None:
        if self.rate.qps and not self.rate.acquire(self._stop):
            # stopping while waiting for a rate slot: hand the message back (or leave it unacked)
            if self.caps.native_requeue:
                self.broker.requeue([task.delivery])
                self._released += 1
            return
        ex = self.executor
        if ex.held >= ex.max_workers:  # a transport's inline call took a slot after this task was fetched
            ex.wait_for_room(self._stop)
        if ex.is_async:
            ex.submit(self.runner.run_async, task)
        else:
            ex.submit(self.runner.run, task)

    def _hand_back(self, d: Delivery) -> None:
        try:
            if self.caps.native_requeue:
                self.broker.requeue([d])
            # otherwise it stays unacked: an at-least-once broker redelivers it
        except Exception as exc:
            self.logger.error("could not hand the message back (%s); it stays unacked", exc)

    def _submit_due_delayed(self) -> None:
        if not self._delayed:
            return
        now = time.time()
        due = []
        with self._delayed_lock:
            while self._delayed and self._delayed[0][0] <= now:
                due.append(heapq.heappop(self._delayed)[3])
        for task in due:
            task.msg.extra.pop("_eta", None)
            if self._after_delay_checks(task):
                self.submit(task)

    def wait_until_runnable(self, stop: Optional[threading.Event] = None) -> bool:
        """Block while the queue is paused or outside its run-time window. False if stopping.
        Brokers that own the consume loop call this (directly or through execute_inline)."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            wait = self.seconds_until_runnable_check()
            if not wait:
                return True
            stop.wait(wait)
        return False

    def reserve_slot(self) -> bool:
        """Take one of the pool's slots for a task this thread will run with ``execute_inline(d,
        slot_reserved=True)``, if one is free (False: buffer the message instead). The slot counts against
        ``concurrent_num`` like the pool's own tasks."""
        return self.executor.try_hold()

    def execute_inline(self, d: Delivery, *, slot_reserved: bool = False) -> Optional[FunctionResultStatus]:
        """Run one delivery through controls and runner in the calling thread (brokers that own the
        consume loop, such as a foreign framework's worker, call this). Honours pause, the run-time
        window, delays, qps; returns the final status, or None when the message did not run.
        ``slot_reserved``: the caller took a slot with :meth:`reserve_slot`; it is given back here."""
        if slot_reserved:
            try:
                return self._execute_inline(d, hold=False)
            finally:
                self.executor.release_slot()
        return self._execute_inline(d, hold=True)

    def _execute_inline(self, d: Delivery, hold: bool) -> Optional[FunctionResultStatus]:
        # the common state (not paused, no run-time window, not stopping) without the calls; any other goes
        # through the general wait
        if (self.paused or self.window is not None or self._stop.is_set()) and not self.wait_until_runnable():
            return None
        task = self.prepare(d)
        if task is None:
            return None
        eta = task.msg.extra.pop("_eta", None) if task.msg.has_options else None
        if eta is not None:  # not due yet: this thread holds it, then runs the checks that wait for due time
            while not self._stop.is_set() and time.time() < eta:
                self._stop.wait(min(0.5, max(0.0, eta - time.time())))
            if not self._after_delay_checks(task):
                return None
        if self.rate.qps:
            self.rate.acquire(self._stop)
        if self.runner.is_coroutine and self.executor.is_async:
            return self._run_on_loop(task, hold)
        if not hold:  # its slot is already counted (reserve_slot)
            return self.runner.run(task)
        # counted as a running task of the executor, so that stop() waits for it (within shutdown_timeout)
        # and reports it, as for the tasks of the engine's own pool
        ex = self.executor
        ex.hold_slot()
        try:
            return self.runner.run(task)
        finally:
            ex.release_slot()

    def _run_on_loop(self, task: Task, hold: bool = True) -> Optional[FunctionResultStatus]:
        """``execute_inline`` of an ``async def`` function: run it on the consumer's event loop and wait for
        it here. Counted as a running task of the executor, so that ``stop`` waits for it like for the
        others; should the loop stop with it unfinished (past stop's deadline), None, not a hang."""
        import asyncio
        import concurrent.futures
        ex = self.executor
        if hold:
            ex.hold_slot()  # released here, once this thread has the result (not on the loop before it)
        try:
            try:
                fut = asyncio.run_coroutine_threadsafe(self.runner.run_async(task), ex.loop)  # type: ignore[attr-defined]
            except RuntimeError:  # the loop is closed: the consumer stopped
                return None
            while True:
                try:
                    return fut.result(timeout=1.0)
                except concurrent.futures.TimeoutError:
                    if not ex.loop.is_running():  # type: ignore[attr-defined]
                        fut.cancel()
                        return None
        finally:
            if hold:
                ex.release_slot()

    # ---------------------------------------------------------------- outcomes
    def _dead_letter_malformed(self, d: Delivery, reason: str) -> None:
        # logged after the broker has it: the log must never say "moved" about a message that was not
        if self._reject([d], reason):
            self.logger.error("malformed message moved to %s_dlx: %s", self.params.queue_name, reason)
            self._answer_malformed(d, reason)

    def _answer_malformed(self, d: Delivery, reason: str) -> None:
        """A caller waiting for the result of a malformed message gets the reason (when the message's task id
        can be read and it asked for a result), instead of waiting out its timeout."""
        try:
            obj = d.body if isinstance(d.body, dict) else loads(d.body)
            extra = obj.get("extra") if isinstance(obj, dict) else None
            task_id = extra.get("task_id") if isinstance(extra, dict) else None
            rpc = extra.get("is_using_rpc_mode") if isinstance(extra, dict) else None
            if not isinstance(task_id, str) or not task_id or not (rpc is True or (rpc is None and
                                                                                   self.params.is_using_rpc_mode)):
                return
            status = FunctionResultStatus(self.params.queue_name, task_id, {})
            status.run_status = PLAIN_RUN_STATUS[RunStatus.DEAD_LETTERED]
            status.exception_type, status.exception_msg = "MalformedMessage", reason
            status.exception = f"MalformedMessage: {reason}"
            status.finish()
            self.state.set_result(task_id, status.to_dict(), self.params.rpc_result_expire_seconds)
        except Exception as exc:  # noqa: BLE001 - the message is dead-lettered already; this is a courtesy
            self.logger.warning("could not give the malformed message's caller its result: %s", exc)

    def _reject(self, deliveries: list[Delivery], reason: str) -> bool:
        try:
            self.broker.reject(deliveries, reason)
        except Exception as exc:
            self.logger.error("dead-lettering failed (%s: %s; reason: %s); the message stays unacked and will "
                              "come back", type(exc).__name__, exc, reason, exc_info=True)
            return False
        return True

    def _dead_letter(self, task: Task, reason: str) -> None:
        status = self.runner.new_status(task)
        status.exception_type, status.exception_msg = "DeadLettered", reason
        status.exception = reason
        self.logger.error("task %s moved to %s_dlx: %s", task.task_id, self.params.queue_name, reason,
                          extra={"task_id": task.task_id})
        self.finish_task(task, status, RunStatus.DEAD_LETTERED, reason=reason)

    def _finish_without_run(self, task: Task, run_status: RunStatus, reason: str) -> None:
        status = self.runner.new_status(task)
        status.run_status = PLAIN_RUN_STATUS[run_status]
        status.exception_type, status.exception_msg = status.run_status, reason
        status.result = "filtered_task_result" if run_status is RunStatus.FILTERED else None
        self.logger.info("task %s not run: %s", task.task_id, reason, extra={"task_id": task.task_id})
        self.finish_task(task, status, run_status)

    def on_attempt_error(self, status: FunctionResultStatus, exc: BaseException) -> None:
        if self._on_error:
            get_plugin_manager().hook.funboost_on_error(queue_name=self.params.queue_name, status=status,
                                                        exception=exc)

    def finish_is_cheap(self, task: Task, outcome: RunStatus) -> bool:
        """True when finishing is only a buffered ack and maybe a queued status record (no state I/O,
        callbacks or republish)."""
        p = self.params
        extra = task.msg.extra
        return (outcome is _FINISH and self._plain_finish and task.delivery.reply is None
                and not extra.get("is_using_rpc_mode", p.is_using_rpc_mode)
                and not extra.get("do_task_filtering", p.do_task_filtering))

    def finish_task(self, task: Task, status: FunctionResultStatus, outcome: RunStatus, reason: str = "",
                    retry_delay: float = 0.0) -> None:
        """Everything after the last attempt. The broker hears last (ack / requeue / dead-letter), so a
        crash anywhere before leaves the message to run again rather than vanish. ``retry_delay``: when a
        ``RETRY_LATER`` copy is due, in seconds."""
        p = self.params
        d = task.delivery
        if type(outcome) is not RunStatus:  # a plain string from a caller written before RunStatus
            outcome = RunStatus(outcome)
        if outcome is _REQUEUED and int(task.msg.extra.get("_requeue_count", 0)) >= p.max_requeue_times:
            # the last requeue allowed was spent: this run ends the task (dead letter), so it is final for
            # the RPC result, the status record and the callbacks below, like any other dead letter
            reason = f"requeued {task.msg.extra.get('_requeue_count', 0)} times (max_requeue_times={p.max_requeue_times})"
            self.logger.error("task %s: %s; moving it to the dead-letter queue", task.task_id, reason,
                              extra={"task_id": task.task_id})
            outcome = _DEAD_LETTERED
            if status.run_status == _REQUEUED:
                status.run_status = _RUNNING
        if status.run_status == _RUNNING:
            status.run_status = PLAIN_RUN_STATUS[outcome]  # records keep plain strings
        status.finish()
        self.stats.record(status.success, status.time_cost or 0.0)
        extra = task.msg.extra
        if self.finish_is_cheap(task, outcome):
            if self.status_saver is not None:  # the common case: at most a record and the (batched) ack
                self.status_saver.add(status)
            if not d.auto_ack:
                self.acker.add(d)
            return
        if outcome is _FINISH and status.success and extra.get("do_task_filtering", p.do_task_filtering):
            try:
                key = task.filter_key or filter_key(task.msg.kwargs, extra.get("filter_str"))
                self.state.filter_add(p.queue_name, key, p.task_filtering_expire_seconds or None)
            except Exception as exc:
                self.logger.error("could not record the task filter key: %s", exc)
        if task.filter_claimed:  # after the key is recorded: a waiting duplicate then sees it
            task.filter_claimed = False
            try:
                self.state.release_lock(_filter_claim(p.queue_name, task.filter_key or ""), task.task_id)
            except Exception as exc:  # it expires on its own
                self.logger.warning("could not release the filter claim of task %s: %s", task.task_id, exc)
        final = outcome is _FINISH or outcome.is_final
        if final and extra.get("is_using_rpc_mode", p.is_using_rpc_mode):
            try:
                self.state.set_result(task.task_id, status.to_dict(), p.rpc_result_expire_seconds)
            except Exception as exc:
                self.logger.error("could not store the RPC result of %s: %s", task.task_id, exc)
        if self.status_saver is not None:
            self.status_saver.add(status)
        if final and p.user_custom_record_process_info_func is not None:
            try:
                p.user_custom_record_process_info_func(status)
            except Exception:
                self.logger.exception("user_custom_record_process_info_func failed")
        if final and self._after_execute:
            get_plugin_manager().hook.funboost_after_execute(queue_name=p.queue_name, status=status)
        if d.reply is not None and final:
            try:
                d.reply(status)
            except Exception:
                self.logger.exception("reply to the caller failed")
        # ---- broker last
        try:
            if outcome is _REQUEUED:
                self._requeue_with_guard(task, status)
            elif outcome is _RETRY_LATER:
                self._republish(task, countdown=retry_delay or 1.0,
                                extra_updates={"_advanced_retry_count": status.run_times})
            elif outcome is _DEAD_LETTERED:
                self._reject([d], reason or f"{status.exception_type}: {status.exception_msg}")
            elif not d.auto_ack:
                self.acker.add(d)
        except Exception as exc:
            self.logger.error("could not settle task %s with the broker: %s", task.task_id, exc)

    def _republish(self, task: Task, countdown: float = 0.0, extra_updates: Optional[dict] = None) -> None:
        """Publish a copy of the message (with updated counters), then ack the original."""
        # the user's schedule (and its misfire grace) applied to the first run only; a retry is due when it is
        extra = {k: v for k, v in task.msg.extra.items()
                 if k not in ("_eta", "countdown", "eta", "misfire_grace_time")}
        extra.update(extra_updates or {})
        now = time.time()
        eta = now + countdown if countdown else None
        if eta is not None:
            extra["eta"] = eta
        env = build_envelope(task.msg.kwargs, task_id=task.task_id, extra_options=extra, publish_time=now)
        env["extra"]["publish_time"] = extra.get("publish_time", env["extra"]["publish_time"])
        # the ordering/partition key goes with the copy (kafka: same key, same partition, as documented)
        om = OutgoingMessage(body=dumps(env), task_id=task.task_id, priority=extra.get("priority"),
                             eta=eta if self.caps.native_delay else None, key=extra.get("key"))
        if self.broker.replace_delivery(task.delivery, om):  # a server transport: its caller waits for the copy
            return
        self.broker.publish([om])
        self.acker.add(task.delivery)

    def _requeue_with_guard(self, task: Task, status: FunctionResultStatus) -> None:
        # (finish_task turned a requeue beyond max_requeue_times into a dead letter already)
        count = int(task.msg.extra.get("_requeue_count", 0)) + 1
        self._republish(task, extra_updates={"_requeue_count": count})

    # ---------------------------------------------------------------- control thread
    def _control_loop(self) -> None:
        p = self.params
        next_stats = time.monotonic() + p.stats_log_interval
        need_state = True
        while not self._stop.wait(FLAG_POLL_INTERVAL):
            now = time.monotonic()
            if need_state:
                try:
                    self._refresh_flags()
                except Exception as exc:
                    self.logger.warning("state backend unavailable: %s", exc)
            if now >= next_stats:
                next_stats = now + p.stats_log_interval
                self._log_stats()
            self._tick_metrics(now)

    def _tick_metrics(self, now: float) -> None:
        """Once a second: this second's metric deltas; every FLUSH_INTERVAL: a queue-size sample and one
        write of the metric rows; every catalog REFRESH_INTERVAL: the queue's catalog record."""
        try:
            self.metrics.sample()
            if now - self.metrics.last_flush >= FLUSH_INTERVAL:
                depth = None
                try:
                    size = self.broker.queue_size()
                    self.last_queue_size = size.as_dict()
                    if size.ready is not None:
                        depth = size.ready + (size.delayed or 0)
                except Exception:
                    self.last_queue_size = None
                self.metrics.flush(self.state, depth)
            if now >= self._catalog_due:
                self._write_catalog(now)
        except Exception as exc:
            self.logger.warning("could not write queue metrics: %s", exc)

    def _write_catalog(self, now: float) -> None:
        from funboost.admin.catalog import CATALOG, REFRESH_INTERVAL, queue_record
        self._catalog_due = now + REFRESH_INTERVAL
        rec = queue_record(self.params, self.broker, self.setup.func_name, self.setup.arg_names,
                           self.setup.required_args)
        try:
            self.state.doc_put(CATALOG, self.params.queue_name, rec)
        except NotImplementedError:
            self._catalog_due = float("inf")

    def _refresh_flags(self) -> None:
        p = self.params
        flags = self.state.get_flags(p.queue_name)
        before = (self.paused, self._qps_setting, self.executor.max_workers)
        paused = bool(flags.get(QueueFlag.PAUSE, False))
        if paused != self.paused:
            self.paused = paused
            self.logger.info("queue %r %s", p.queue_name, "paused" if paused else "resumed")
        qps = flags.get(QueueFlag.QPS, p.qps)
        if qps is not None:
            try:
                qps = qps_value(qps)
            except ValueError as exc:  # written by something that skipped the checks of set_qps
                if repr(qps) != self._bad_qps:  # once per bad value, not at every refresh
                    self._bad_qps = repr(qps)
                    self.logger.error("queue %r: ignoring the stored qps flag (%s); running without a limit",
                                      p.queue_name, exc)
                qps = None
        self._qps_setting = qps
        if p.is_using_distributed_frequency_control and qps:
            qps = qps / max(1, self._live_consumers)
        if qps != self.rate.qps:
            self.rate.set_rate(qps)
        conc = _concurrency_flag(flags.get(QueueFlag.CONCURRENT_NUM))  # (None: unset or unusable)
        if conc and conc != self.executor.max_workers and p.concurrent_mode != "single_thread":
            self.executor.max_workers = conc
        # queued tasks are checked against this set at dispatch whatever the settings; running ones
        # are only stoppable with is_support_remote_kill_task (they run in killable threads)
        self.kill_set = self.state.kill_requests(p.queue_name)
        if (self.paused, self._qps_setting, self.executor.max_workers) != before and not self._stop.is_set():
            # a changed setting shows in this consumer's heartbeat now, not at the next beat (up to 5 s later):
            # `funboost pause --wait` and the web manager's "applied on N of M consumers" read it there
            try:
                self._heartbeat()
            except Exception as exc:
                self.logger.warning("could not publish the changed settings in the heartbeat: %s", exc)

    def _heartbeat(self) -> None:
        p = self.params
        # what the manager shows ("applied on N of M consumers" compares qps / concurrent_num / paused
        # with the queue's flags): the values in force here, not the decorator's
        info = {"host": _HOSTNAME, "ip": _host_ip(), "pid": os.getpid(), "broker_kind": self.broker.kind,
                "concurrent_mode": p.concurrent_mode, "concurrent_num": self.executor.max_workers,
                "qps": self._qps_setting, "qps_effective": self.rate.qps, "rate": round(self.stats.last_rate, 3),
                "total_runs": self.stats.total_runs, "total_fail": self.stats.total_fail, "paused": self.paused,
                "started": self.started_at, "function": self.setup.func_name, "queue_size": self.last_queue_size}
        self.state.heartbeat(self.consumer_id, p.queue_name, info, HEARTBEAT_TTL)
        if p.is_using_distributed_frequency_control:
            self._live_consumers = max(1, len(self.state.live_consumers(p.queue_name)))

    def _log_stats(self) -> None:
        """Log throughput when something ran in the window; an idle consumer stays quiet (a queue whose
        waiting count changes while nothing runs here, e.g. paused, is reported once per change)."""
        runs, fail, avg, elapsed = self.stats.roll()
        if runs == 0 and self.stats.total_runs == 0:
            return
        ready = None
        try:
            ready = self.broker.queue_size().ready
        except Exception:
            pass
        if runs == 0 and (not ready or ready == self._last_logged_ready):
            return
        self._last_logged_ready = ready
        msg = (f"queue {self.params.queue_name!r}: {runs} runs in the last {elapsed:.0f}s "
               f"({fail} failed, avg {avg:.3f}s), {self.stats.total_runs} since start")
        if ready is not None:
            msg += f"; {ready} waiting"
            if runs:
                rate = runs / elapsed * max(1, self._live_consumers)
                msg += f", about {ready / rate:.0f}s to drain"
        self.logger.info(msg)

    _last_logged_ready: Optional[int] = None
