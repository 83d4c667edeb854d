"""The Celery worker that runs this process's CELERY boosters: the framing on core's foreign-worker host.

One :class:`CeleryWorkerHost` per Celery app and process (:func:`funboost.foreign.join_worker_host`
does the bookkeeping: settle time, concurrencies added up, first booster starts the worker thread, last
one stops it, pause / run-time window / qps followed). Here: each queue is a Celery task named after
the queue whose body hands the envelope to funboost (``run_message``), and the outcome becomes
Celery's verb; the worker is a real Celery ``WorkController`` with a threads pool.

Why threads and not prefork: the task body needs this process's funboost consumer (its state
backend, its flags refreshed by the control thread, the user's function as decorated here). Forked
prefork children would each need their own; ``multi_process_consume(n)`` gives exactly that, one
threads-pool worker per process.
"""
from __future__ import annotations

import keyword
import os
import re
import socket
import threading
import uuid
from typing import Any, Callable, Optional

from celery import Celery
from celery.app.trace import trace_task_ret
from celery.concurrency.thread import TaskPool as _CeleryThreadPool
from celery.exceptions import Ignore, Reject, WorkerShutdown

from funboost.foreign import ForeignWorkerHost, Verb, envelope_from_foreign
from funboost.plugins.host import ConsumerHost

from funboost_celery.options import CeleryOptions


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


def python_name(queue: str) -> str:
    """A Python identifier for the task function of ``queue``.

    Celery compiles a signature-checking function under the task function's ``__name__``
    (``celery.utils.functional.head_from_fun``), so that name must be an identifier; the Celery task
    *name* stays the queue name (task names may contain dots, dashes, anything).
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", queue)
    if not name.isidentifier() or keyword.iskeyword(name):  # "1st", "class" ...
        name = f"q_{name}"
    return name


def envelope_from_celery(args: tuple, kwargs: dict, celery_task_id: Optional[str]) -> Any:
    """The funboost envelope carried by a Celery message (see :func:`funboost.foreign.envelope_from_foreign`)."""
    return envelope_from_foreign(args, kwargs, celery_task_id, framework="celery")


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # tasks handed to the pool whose completion callback (Request.on_success / on_failure, which queues
        # the message's ack or reject on the worker's event loop) has not returned yet
        self._unsettled = 0
        self._settled = threading.Condition()

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None, callback: Any = None,
                 accept_callback: Any = None, **rest: Any) -> Any:
        if target is trace_task_ret and self.app is not None:
            kwargs = dict(kwargs or {}, app=self.app)
        if callback is not None:
            callback = self._counted(callback)
        return super().on_apply(target, args, kwargs, callback, accept_callback, **rest)

    def _counted(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        with self._settled:
            self._unsettled += 1

        def settle(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            finally:
                with self._settled:
                    self._unsettled -= 1
                    self._settled.notify_all()
        return settle

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every task the pool ran has queued its ack / reject (True), or ``timeout``."""
        with self._settled:
            return self._settled.wait_for(lambda: self._unsettled == 0, max(0.0, timeout))


class CeleryWorkerHost(ForeignWorkerHost):
    framework = "celery"
    # a message the worker took while the queue may not run is rejected back (requeued), not held: on
    # RabbitMQ a message held unacked past the server's consumer_timeout (30 minutes by default) closes
    # the channel and comes back a second time while the worker still holds it, so a long pause would
    # run tasks twice. The queue's consumer is cancelled meanwhile (stop_queue), so it is not taken again.
    holds_messages_while_paused = False
    # at a warm stop, how long to wait for finished tasks' acks to be queued (a task still running past the
    # stop's own wait never settles: its message is restored, as it must be)
    ack_settle_seconds = 5.0

    def __init__(self, app: Celery, options: CeleryOptions) -> None:
        super().__init__()
        self.app = app
        self.options = options
        self.worker: Any = None
        self.hostname = f"funboost.{os.getpid()}.{uuid.uuid4().hex[:6]}@{socket.gethostname()}"

    # ------------------------------------------------------------------ the Celery task of a queue
    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        rate = rate_string(consumer.params.qps)
        existing = self.app.tasks.get(queue)
        if existing is not None:  # the booster consumes again in this process, maybe on a new host
            existing.rate_limit = rate
            existing.funboost_host = self
            return

        def run(task: Any, *args: Any, **kwargs: Any) -> Any:
            req = task.request
            outcome = task.funboost_host.run_message(queue, envelope_from_celery(args, kwargs, req.id),
                                       redelivered=bool((req.delivery_info or {}).get("redelivered")),
                                       eta=req.eta)
            if outcome.verb is Verb.ACK:
                return outcome.result
            if outcome.verb is Verb.IGNORE:
                raise Ignore()  # a new Celery message carries the task on; record nothing for this one
            if outcome.verb is Verb.REJECT:
                raise Reject(outcome.error, requeue=True)
            raise FunboostTaskFailed(outcome.error)

        run.__name__ = run.__qualname__ = python_name(queue)
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
        self.app.tasks[queue].funboost_host = self  # the host whose booster runs it (read per message)

    # ------------------------------------------------------------------ the worker
    def create_worker(self, queues: list[str], concurrency: int) -> None:
        kwargs: dict[str, Any] = {"pool_cls": AppThreadPool, "concurrency": concurrency, "queues": queues,
                                  "hostname": self.hostname, "without_mingle": True, "without_gossip": True,
                                  "loglevel": "WARNING", "ready_callback": self._on_ready}
        kwargs.update(self.options.worker_options)
        self.worker = self.app.WorkController(**kwargs)

    def run_worker(self) -> None:
        # on Redis, the messages this worker holds (running, waiting for their eta, prefetched) stay
        # its own while this process lives: funboost_celery.lease
        self.worker.start()

    def _on_ready(self, celery_consumer: Any) -> None:
        # runs in the worker thread, just before its loop starts
        self.worker_ready()

    def stop_worker(self, timeout: float) -> None:
        """Warm shutdown: stop taking messages, let running tasks finish, ack them."""
        w = self.worker
        if w is None:
            return
        hub = getattr(w, "hub", None)
        if hub is not None and self.ready.is_set():
            # Celery acks a finished task from its event loop (Request.on_success queues message.ack with
            # hub.call_soon): a shutdown raised before those callbacks ran dropped them, and the closing
            # channel restored the messages of tasks that had finished (they ran again in the next worker).
            # So: wait (bounded) until every finished task has queued its ack, then raise from the loop's
            # tick, which comes after the whole batch of ready callbacks (the batch is an unordered set).
            pool = getattr(w, "pool", None)
            if isinstance(pool, AppThreadPool):
                pool.wait_settled(min(timeout, self.ack_settle_seconds))

            def _raise() -> None:
                raise WorkerShutdown(0)
            hub.call_soon(lambda: hub.on_tick.add(_raise))
        else:
            w.stop(in_sighandler=False)

    # ------------------------------------------------------------------ queues and rates at run time
    def start_queue(self, queue: str) -> None:
        def start(c: Any) -> None:
            c.update_strategies()  # a task registered after the worker started needs its strategy
            if not c.task_consumer.consuming_from(queue):
                c.add_task_queue(queue)
        self._call_in_loop(start)

    def stop_queue(self, queue: str) -> None:
        self._call_in_loop(lambda c: c.cancel_task_queue(queue))

    def set_rate(self, queue: str, qps: float) -> None:
        task = self.app.tasks.get(queue)
        if task is not None:
            task.rate_limit = rate_string(qps)
            self._call_in_loop(lambda c: c.reset_rate_limits())

    def _call_in_loop(self, fn: Callable[[Any], None]) -> None:
        """Run ``fn(celery_consumer)`` in the worker's own thread: kombu channels are not thread-safe."""
        w = self.worker
        c = w.consumer
        hub = getattr(w, "hub", None)
        if hub is not None:
            hub.call_soon(lambda: fn(c))
        else:  # transports without an event loop poll synchronously; act directly
            fn(c)

