"""The worker host: one framework worker per process that runs every booster of that framework.

A framework-as-broker plugin subclasses :class:`ForeignWorkerHost` and writes the framing only:

* :meth:`~ForeignWorkerHost.register_queue` turns a queue into the framework's task / actor / job;
* :meth:`~ForeignWorkerHost.create_worker` and :meth:`~ForeignWorkerHost.run_worker` build and run the
  framework's worker (in the host's thread), :meth:`~ForeignWorkerHost.stop_worker` stops it;
* optionally :meth:`~ForeignWorkerHost.start_queue` / :meth:`~ForeignWorkerHost.stop_queue` (a booster
  joins or leaves a running worker; pause and the run-time window) and
  :meth:`~ForeignWorkerHost.set_rate` (qps changes).

The host does the bookkeeping: which boosters of this process share the worker, a short settle time
so that boosters whose ``consume()`` come together start one worker with their concurrencies added
up, starting the worker thread with the first booster and stopping it with the last, following pause,
the run-time window and qps changes, and running each framework message through funboost
(:meth:`~ForeignWorkerHost.run_message`).
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Any, Callable, ClassVar, Hashable, Optional, TypeVar

from funboost.foreign.eta import EtaLike, parse_eta
from funboost.foreign.outcome import Outcome, outcome_of, rejected
from funboost.plugins.broker import Delivery
from funboost.plugins.host import ConsumerHost
from funboost.process_local import ProcessLocalDict

STOPPED_REASON = "the funboost consumer of this queue stopped"
NOT_RUNNABLE_REASON = "the queue is paused or outside its run-time window"


def run_foreign_delivery(consumer: ConsumerHost, body: Any, *, redelivered: bool = False,
                         eta: EtaLike = None, hold: bool = True) -> Outcome:
    """Run one framework message's envelope through funboost in the calling (framework) thread.

    ``eta``: the framework's due time, when its timer may fire a little early (funboost would hold
    the message itself otherwise). A message that arrives while the queue is paused or outside its
    run-time window waits here (``hold=False``: it is rejected at once, for the framework to give
    back); when the consumer stops meanwhile it is rejected back to the queue. The framework must
    settle its message as the returned :class:`Outcome` says.
    """
    if eta is not None:
        due = parse_eta(eta)
        if due is not None:
            left = due - time.time()
            if left > 0 and consumer.stop_event.wait(left + 0.002):
                return rejected(STOPPED_REASON)
    if not hold and not consumer.is_runnable():
        return rejected(STOPPED_REASON if consumer.stopped else NOT_RUNNABLE_REASON)
    # execute_inline waits while paused / outside the run-time window, and returns None without running
    # when the consumer stops meanwhile (or while waiting for its qps slot): then the message goes back
    status = consumer.execute_inline(Delivery(body=body, tag=None, redelivered=redelivered, auto_ack=True))
    if status is None and consumer.stopped:
        return rejected(STOPPED_REASON)
    return outcome_of(status)


class ForeignWorkerHost(abc.ABC):
    """One framework worker of this process, shared by the boosters that consume through it."""

    #: boosters whose ``consume()`` come within this time start one worker together
    settle_seconds: ClassVar[float] = 0.15
    #: how often pause / run-time window / qps are compared with what the worker was told
    control_interval: ClassVar[float] = 0.5
    #: the framework's name, for thread names and the logger (``funboost.<framework>``)
    framework: ClassVar[str] = "foreign"
    #: True: a message the worker hands over while the queue may not run (paused, outside its run-time
    #: window) waits in the worker thread until it may. False: it is rejected at once and the framework
    #: gives it back: for a framework whose paused consumer closes its connection, after which the server
    #: would deliver the held messages again while the worker threads still hold them (dramatiq on
    #: RabbitMQ: each would run twice), or a server that takes back a message held unacked too long
    #: (RabbitMQ's consumer_timeout, 30 minutes by default: Celery during a long pause)
    holds_messages_while_paused: ClassVar[bool] = True

    def __init__(self) -> None:
        # re-entrant: add() may call start_queue(), which a subclass may implement with its own calls back
        self.lock = threading.RLock()
        self.consumers: dict[str, ConsumerHost] = {}
        #: set once the framework's worker takes messages (the subclass calls :meth:`worker_ready`)
        self.ready = threading.Event()
        #: set when the worker thread ended (or never started a worker)
        self.stopped = threading.Event()
        self.logger = logging.getLogger(f"funboost.{self.framework}")
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self._consuming: dict[str, bool] = {}  # what the worker was told to do per queue
        self._rates: dict[str, float] = {}
        self._started_with: set[str] = set()  # the queues the worker was created with

    # ------------------------------------------------------------------ for the framework's plugin
    @abc.abstractmethod
    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        """Make ``queue`` a task of the framework whose body calls :meth:`run_message` (called with the
        lock held, once per ``consume()``; a queue may be registered again after it left)."""

    @abc.abstractmethod
    def create_worker(self, queues: list[str], concurrency: int) -> None:
        """Build the framework's worker for ``queues`` with ``concurrency`` slots (lock held, in the host's
        thread). Raise to give up: the error is logged and no worker runs."""

    @abc.abstractmethod
    def run_worker(self) -> None:
        """Run the worker built by :meth:`create_worker` until it stops (in the host's thread, no lock).
        Call :meth:`worker_ready` once it takes messages."""

    @abc.abstractmethod
    def stop_worker(self, timeout: float) -> None:
        """Ask the running worker for a warm stop (let running tasks end and settle them); any thread."""

    def start_queue(self, queue: str) -> None:
        """Start taking ``queue``'s messages in the running worker (a booster joined, resume, window
        opened). Frameworks that cannot change their queues at run time need not override: the queue
        keeps being consumed and its messages wait in :func:`run_foreign_delivery`."""

    def stop_queue(self, queue: str) -> None:
        """Stop taking ``queue``'s messages (a booster left, pause, window closed). See start_queue."""

    def set_rate(self, queue: str, qps: float) -> None:
        """The queue's qps changed (0 = unlimited). funboost's own limiter applies in any case (inside
        ``execute_inline``); a framework with a rate limit of its own mirrors it here."""

    # ------------------------------------------------------------------ boosters join and leave
    def add(self, consumer: ConsumerHost) -> bool:
        """A booster of this process starts consuming through this host. False when the host is
        shutting down (its last booster just left): use a new one (:func:`join_worker_host` does)."""
        queue = consumer.params.queue_name
        with self.lock:
            if self._closing:
                return False
            self.register_queue(queue, consumer)
            self.consumers[queue] = consumer
            self._consuming[queue] = True
            self._rates[queue] = consumer.current_qps
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"funboost-{self.framework}-worker",
                                                daemon=True)
                self._thread.start()
                threading.Thread(target=self._control_loop, name=f"funboost-{self.framework}-control",
                                 daemon=True).start()
            elif self.ready.is_set():
                self.start_queue(queue)
            # otherwise worker_ready() starts it
        return True

    def remove(self, queue: str, timeout: float = 30.0) -> None:
        """The booster stopped: stop taking its messages; the last one stops the worker."""
        with self.lock:
            if self.consumers.pop(queue, None) is None:
                return
            consuming = self._consuming.pop(queue, False)
            self._rates.pop(queue, None)
            if self.consumers:
                if consuming and self.ready.is_set():
                    self.stop_queue(queue)
                return
            thread = self._thread
        self.shutdown(timeout)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the worker (warm) and wait up to ``timeout`` for its thread to end."""
        with self.lock:
            self._closing = True
            created = self._thread is not None and not self.stopped.is_set()
        if created:
            try:
                self.stop_worker(timeout)
            except Exception:
                self.logger.exception("stopping the %s worker failed", self.framework)
        self.stopped.wait(timeout)

    @property
    def closing(self) -> bool:
        return self._closing

    def concurrency(self) -> int:
        """The worker's slots: the boosters' concurrencies added up."""
        return max(1, sum(c.concurrency for c in self.consumers.values()))

    # ------------------------------------------------------------------ a framework message
    def run_message(self, queue: str, body: Any, *, redelivered: bool = False, eta: EtaLike = None) -> Outcome:
        """The task body of ``queue``: run the envelope through this process's booster of the queue."""
        consumer = self.consumers.get(queue)
        if consumer is None or consumer.stopped:
            return rejected(STOPPED_REASON)
        return run_foreign_delivery(consumer, body, redelivered=redelivered, eta=eta,
                                    hold=self.holds_messages_while_paused)

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        try:
            time.sleep(self.settle_seconds)  # let sibling boosters' consume() calls join the first worker
            with self.lock:
                queues = list(self.consumers)
                if not queues or self._closing:  # everyone left during the settle time: no worker at all
                    return
                self._started_with = set(queues)
                concurrency = self.concurrency()
                try:
                    self.create_worker(queues, concurrency)
                except Exception:
                    self.logger.exception("could not create the %s worker", self.framework)
                    return
            self.logger.info("%s worker started: queues %s, %d slots", self.framework, queues, concurrency)
            self.run_worker()
        except Exception:
            self.logger.exception("the %s worker ended with an error", self.framework)
        finally:
            self.stopped.set()

    def worker_ready(self) -> None:
        """The subclass calls this once its worker takes messages: queues that joined, left or paused
        between :meth:`create_worker` and now are brought in line."""
        with self.lock:
            self.ready.set()
            if self._closing:  # shutdown() came while the worker was starting
                self.stop_worker(0)
                return
            for queue in self._started_with - set(self.consumers):
                self.stop_queue(queue)
            for queue, want in self._consuming.items():
                if want != (queue in self._started_with):
                    (self.start_queue if want else self.stop_queue)(queue)

    def _control_loop(self) -> None:
        """Mirror funboost's pause / run-time window / qps (kept current by each consumer's control
        thread from the state backend) into the framework's worker."""
        while not self.stopped.wait(self.control_interval):
            if not self.ready.is_set():
                continue
            with self.lock:
                for queue, consumer in list(self.consumers.items()):
                    try:
                        self._follow(queue, consumer)
                    except Exception:
                        self.logger.exception("could not update the %s worker for queue %s", self.framework, queue)

    def _follow(self, queue: str, consumer: ConsumerHost) -> None:
        want = consumer.is_runnable()
        if want != self._consuming.get(queue):
            self._consuming[queue] = want
            (self.start_queue if want else self.stop_queue)(queue)
        qps = consumer.current_qps
        if qps != self._rates.get(queue):
            self._rates[queue] = qps
            self.set_rate(queue, qps)


H = TypeVar("H", bound=ForeignWorkerHost)
_hosts: ProcessLocalDict[Hashable, ForeignWorkerHost] = ProcessLocalDict()  # a forked child starts its own


def worker_host(key: Hashable, factory: Callable[[], H]) -> H:
    """This process's host for ``key`` (the framework and its configuration), made by ``factory`` when
    there is none yet, the last one stopped or is stopping, or the process was forked since (a child
    never reuses its parent's worker, threads or sockets)."""
    while True:
        host = _hosts.get_or_create(key, factory)
        if not (host.closing or host.stopped.is_set()):
            return host  # type: ignore[return-value]
        _hosts.pop_if(key, host)  # replaced once, even when threads race


def join_worker_host(key: Hashable, factory: Callable[[], H], consumer: ConsumerHost) -> H:
    """Add ``consumer`` to this process's host for ``key`` (see :func:`worker_host`) and return the host."""
    while True:
        host = worker_host(key, factory)
        if host.add(consumer):
            return host
