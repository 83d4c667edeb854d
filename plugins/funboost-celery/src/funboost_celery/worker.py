"""The Celery worker that runs this process's CELERY boosters.

One :class:`WorkerHost` per Celery app and process. The first ``consume()`` starts a real Celery
``WorkController`` (threads pool) in a background thread; boosters that start consuming within the
next moment join it (their ``concurrent_num`` add up), later ones are added to the running worker
through its event loop. Each queue is a Celery task named after the queue; its body hands the
envelope to the funboost consumer (``execute_inline``), so filter, expiry, kill, status records, RPC
results and funboost's retries apply, while acks, prefetch, rate limits, eta and redelivery are
Celery's.

Why threads and not prefork: the task body needs this process's funboost consumer (its state
backend, its flags refreshed by the control thread, the user's function as decorated here). Forked
prefork children would each need their own; ``multi_process_consume(n)`` gives exactly that, one
threads-pool worker per process.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Optional

from celery import Celery
from celery.app.trace import trace_task_ret
from celery.concurrency.thread import TaskPool as _CeleryThreadPool
from celery.exceptions import Ignore, Reject, WorkerShutdown

from funboost.message import dumps
from funboost.plugins.broker import Delivery
from funboost.process_local import ProcessLocalDict

from funboost_celery.options import CeleryOptions

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.consumer import Consumer

logger = logging.getLogger("funboost.celery")

# boosters whose consume() comes within this window share the worker's initial concurrency
SETTLE_SECONDS = 0.15
CONTROL_POLL_SECONDS = 0.5


class FunboostTaskFailed(Exception):
    """Raised from the Celery task when the funboost function failed for good (after funboost's
    retries), so that Celery records FAILURE and its result backend holds the error."""


def rate_string(qps: Optional[float]) -> Optional[str]:
    """funboost's qps as a Celery rate limit ("5.0/s"; "30.0/m" for qps below 1, for precision)."""
    if not qps:
        return None
    if qps < 1:
        return f"{qps * 60:.6g}/m"
    return f"{qps:.6g}/s"


def envelope_from_celery(args: tuple, kwargs: dict, celery_task_id: Optional[str]) -> Any:
    """The funboost envelope carried by a Celery message.

    funboost publishes ``args=[envelope_json]``; a plain Celery caller (``app.send_task(queue,
    kwargs={...})``) sends keyword arguments, which become an envelope with Celery's task id.
    Anything else is passed on as it is, and the funboost consumer dead-letters it with the reason.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], (str, bytes, bytearray)):
        return args[0]
    if not args:
        return dumps({**kwargs, "extra": {"task_id": celery_task_id}} if celery_task_id else kwargs)
    return dumps({"celery_args": list(args), "celery_kwargs": kwargs})


def _parse_eta(eta: Any) -> Optional[float]:
    if eta is None:
        return None
    if isinstance(eta, (int, float)):
        return float(eta)
    if isinstance(eta, dt.datetime):
        return eta.timestamp()
    try:
        return dt.datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


class AppThreadPool(_CeleryThreadPool):
    """Celery's threads pool, telling the tracer which app to use.

    The tracer looks tasks up in the *current* app, which is thread-local and unset in pool threads
    (prefork children set it at start-up); with several apps in one process, making ours the global
    default would not do either. So the app is handed to each task explicitly.

    ``task_join_will_block = False``: the worker is embedded in the user's process, whose main thread
    may wait for Celery results (as Celery's own embedded test worker allows); Celery would otherwise
    forbid ``AsyncResult.get()`` process-wide.
    """

    task_join_will_block = False

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None, callback: Any = None,
                 accept_callback: Any = None, **rest: Any) -> Any:
        if target is trace_task_ret and self.app is not None:
            kwargs = dict(kwargs or {}, app=self.app)
        return super().on_apply(target, args, kwargs, callback, accept_callback, **rest)


class WorkerHost:
    def __init__(self, app: Celery, options: CeleryOptions) -> None:
        self.app = app
        self.options = options
        self.consumers: dict[str, "Consumer"] = {}
        self.lock = threading.RLock()  # add() calls _call_in_loop() while holding it
        self.worker: Any = None
        self.thread: Optional[threading.Thread] = None
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._pending: list[Callable[[Any], None]] = []  # loop calls queued before the worker is ready
        self._queue_state: dict[str, bool] = {}  # queue -> consuming (False while paused / off-window)
        self._rates: dict[str, Optional[float]] = {}
        self._control: Optional[threading.Thread] = None
        self.hostname = f"funboost.{os.getpid()}.{uuid.uuid4().hex[:6]}@{socket.gethostname()}"

    # ------------------------------------------------------------------ registration
    def add(self, consumer: "Consumer") -> None:
        queue = consumer.params.queue_name
        with self.lock:
            self._register_task(queue, consumer)
            self.consumers[queue] = consumer
            self._queue_state[queue] = True
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="funboost-celery-worker", daemon=True)
                self.thread.start()
                self._control = threading.Thread(target=self._control_loop, name="funboost-celery-control",
                                                 daemon=True)
                self._control.start()
            elif self.worker is not None:
                self._call_in_loop(lambda c: self._start_queue(c, queue))

    def remove(self, queue: str, timeout: float = 30.0) -> None:
        """The booster stopped consuming: stop taking its messages; stop the worker with the last one."""
        with self.lock:
            if self.consumers.pop(queue, None) is None:
                return
            self._queue_state.pop(queue, None)
            last = not self.consumers
            if not last:
                if self.worker is not None:
                    self._call_in_loop(lambda c: c.cancel_task_queue(queue))
                return
            thread = self.thread
        self.shutdown(timeout)
        if thread is not None:
            thread.join(timeout)

    def _register_task(self, queue: str, consumer: "Consumer") -> None:
        p = consumer.params
        rate = rate_string(p.qps)
        existing = self.app.tasks.get(queue)
        if existing is not None:
            existing.rate_limit = rate
            self._rates[queue] = p.qps
            return
        host = self

        def run(task: Any, *args: Any, **kwargs: Any) -> Any:
            return host.run_task(queue, task, args, kwargs)

        run.__name__ = run.__qualname__ = queue
        opts: dict[str, Any] = {
            "name": queue, "bind": True, "shared": False, "typing": False,
            "acks_late": True, "reject_on_worker_lost": True,
            # funboost's runner retries in the worker thread (max_retry_times); Celery must not retry too
            "max_retries": 0, "autoretry_for": (),
            "rate_limit": rate,
            "throws": (FunboostTaskFailed,),
        }
        opts.update(self.options.task_options)
        self.app.task(**opts)(run)
        self._rates[queue] = p.qps

    # ------------------------------------------------------------------ the Celery task body
    def run_task(self, queue: str, task: Any, args: tuple, kwargs: dict) -> Any:
        consumer = self.consumers.get(queue)
        if consumer is None or consumer.stopped:
            raise Reject("funboost consumer of this queue stopped", requeue=True)
        req = task.request
        eta = _parse_eta(req.eta)
        if eta is not None:
            # Celery's timer may fire a hair early; funboost would otherwise hold the task itself
            left = eta - time.time()
            if left > 0:
                time.sleep(left + 0.002)
        # a prefetched message while the queue is paused / outside its run-time window waits here
        if not consumer.wait_until_runnable():
            raise Reject("funboost consumer of this queue stopped", requeue=True)
        body = envelope_from_celery(args, kwargs, req.id)
        info = req.delivery_info or {}
        status = consumer.execute_inline(Delivery(body=body, tag=None, redelivered=bool(info.get("redelivered")),
                                                 auto_ack=True))
        if status is None:  # not run: filtered, expired, killed, malformed (already recorded/dead-lettered)
            return None
        outcome = status.run_status
        if outcome in ("requeued", "retry_later"):
            raise Ignore()  # a new Celery message carries the task on; record nothing for this one
        if status.success:
            return status.result
        raise FunboostTaskFailed(f"{status.exception_type}: {status.exception_msg}")

    # ------------------------------------------------------------------ worker thread
    def _concurrency(self) -> int:
        total = 0
        for c in self.consumers.values():
            total += 1 if c.params.concurrent_mode == "single_thread" else int(c.params.concurrent_num)
        return max(1, total)

    def _run(self) -> None:
        time.sleep(SETTLE_SECONDS)  # let sibling boosters' consume() calls join the first worker
        with self.lock:
            queues = list(self.consumers)
            if not queues:  # every booster stopped during the settle time: no worker at all
                self.stopped.set()
                return
            kwargs: dict[str, Any] = {"pool_cls": AppThreadPool, "concurrency": self._concurrency(),
                                      "queues": queues, "hostname": self.hostname,
                                      "without_mingle": True, "without_gossip": True,
                                      "loglevel": "WARNING", "ready_callback": self._on_ready}
            kwargs.update(self.options.worker_options)
            try:
                self.worker = self.app.WorkController(**kwargs)
            except Exception:
                logger.exception("could not create the Celery worker")
                self.stopped.set()
                return
        logger.info("Celery worker %s started: queues %s, threads pool of %d", self.hostname, queues,
                    kwargs["concurrency"])
        try:
            self.worker.start()
        finally:
            self.stopped.set()

    def _on_ready(self, celery_consumer: Any) -> None:
        # runs in the worker thread, just before its loop starts
        with self.lock:
            pending, self._pending = self._pending, []
            self.ready.set()
        for fn in pending:
            fn(celery_consumer)
        # queues added between WorkController() and now
        for q in list(self.consumers):
            if self._queue_state.get(q, True) and not celery_consumer.task_consumer.consuming_from(q):
                self._start_queue(celery_consumer, q)

    def _start_queue(self, c: Any, queue: str) -> None:
        c.update_strategies()  # a task registered after the worker started needs its strategy
        c.add_task_queue(queue)

    def _call_in_loop(self, fn: Callable[[Any], None]) -> None:
        """Run ``fn(celery_consumer)`` in the worker's own thread: kombu channels are not thread-safe."""
        with self.lock:
            if not self.ready.is_set():
                self._pending.append(fn)  # _on_ready runs it in the worker thread
                return
        w = self.worker
        c = w.consumer
        hub = getattr(w, "hub", None)
        if hub is not None:
            hub.call_soon(lambda: fn(c))
        else:  # transports without an event loop poll synchronously; act directly
            fn(c)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Warm shutdown: stop taking messages, let running tasks finish, ack them."""
        w = self.worker
        if w is None:
            return
        hub = getattr(w, "hub", None)
        if hub is not None and self.ready.is_set() and not self.stopped.is_set():
            def _raise() -> None:
                raise WorkerShutdown(0)
            hub.call_soon(_raise)
        else:
            w.stop(in_sighandler=False)
        self.stopped.wait(timeout)

    # ------------------------------------------------------------------ funboost's dynamic controls
    def _control_loop(self) -> None:
        """Follow pause / run-time window / qps changes that funboost's control thread reads from the
        state backend: pause becomes Celery's cancel_consumer, qps becomes the task's rate limit."""
        while not self.stopped.wait(CONTROL_POLL_SECONDS):
            if not self.ready.is_set():
                continue
            with self.lock:
                items = list(self.consumers.items())
            for queue, c in items:
                want = not (c.paused or (c.window is not None and not c.window.is_open()))
                if want != self._queue_state.get(queue, True):
                    self._queue_state[queue] = want
                    if want:
                        self._call_in_loop(lambda cc, q=queue: self._start_queue(cc, q))
                    else:
                        self._call_in_loop(lambda cc, q=queue: cc.cancel_task_queue(q))
                qps = c.rate.qps
                if qps != self._rates.get(queue):
                    self._rates[queue] = qps
                    task = self.app.tasks.get(queue)
                    if task is not None:
                        task.rate_limit = rate_string(qps)
                        self._call_in_loop(lambda cc: cc.reset_rate_limits())


_hosts: ProcessLocalDict[int, WorkerHost] = ProcessLocalDict()  # a forked child starts its own


def host_for(app: Celery, options: CeleryOptions) -> WorkerHost:
    key = id(app)
    h = _hosts.get_or_create(key, lambda: WorkerHost(app, options))
    if h.stopped.is_set():  # a stopped host is replaced (once, even when threads race)
        _hosts.pop_if(key, h)
        h = _hosts.get_or_create(key, lambda: WorkerHost(app, options))
    return h
