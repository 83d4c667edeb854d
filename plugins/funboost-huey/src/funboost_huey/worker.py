"""huey's consumer running this process's HUEY booster of one queue: the framing on core's foreign-worker host.

huey's queue is a Huey instance (see :mod:`funboost_huey.app`), and huey's ``Consumer`` serves one
instance, so each queue has a host of its own (:func:`funboost.foreign.join_worker_host` keyed by the
queue). The worker is huey's real ``Consumer`` with ``worker_type="thread"``: its ``Worker`` threads
(``concurrent_num`` of them) and its ``Scheduler`` thread, started without ``Consumer.run()`` (which
installs signal handlers and blocks: the booster's ``consume()`` is non-blocking, in any thread).

Why threads and not huey's ``process`` workers: the task body needs this process's funboost consumer
(its state backend, its flags kept current by the control thread, the user's function as decorated
here); forked workers would each need their own. ``multi_process_consume(n)`` gives exactly that: one
huey consumer per process.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

from huey.api import Huey
from huey.consumer import Consumer

from funboost.foreign import ForeignWorkerHost
from funboost.plugins.broker import new_consumer_id
from funboost.plugins.host import ConsumerHost

from funboost_huey.app import adopt_legacy_tasks, legacy_huey_name
from funboost_huey.options import HueyOptions
from funboost_huey.storage import Holder


class HueyWorkerHost(ForeignWorkerHost):
    framework = "huey"
    #: how long a huey worker blocks on an empty queue before it looks at its stop flag again
    read_timeout = 1.0

    def __init__(self, huey: Huey, options: HueyOptions) -> None:
        super().__init__()
        self.huey = huey
        self.options = options
        self.queue: str = huey.funboost_queue  # type: ignore[attr-defined]
        #: set while huey's workers may take tasks (cleared: pause, run-time window closed, booster left)
        self.accepting = threading.Event()
        self.consumer: Optional[Consumer] = None
        self.holder: Optional[Holder] = None
        self._stop_timeout = 30.0

    # ------------------------------------------------------------------ the huey task of the queue
    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        self.huey.funboost_host = self  # type: ignore[attr-defined]  # the task body reads it per task

    def holder_id(self) -> str:
        assert self.holder is not None
        return self.holder.current()

    def run_undecodable(self, data: bytes, error: Exception) -> None:
        """A message huey cannot read (another task's name, foreign bytes): funboost dead-letters it."""
        self.logger.warning("queue %s: a message huey cannot read (%s: %s) goes to the dead-letter queue",
                            self.queue, type(error).__name__, error)
        self.run_message(self.queue, bytes(data).decode("latin-1"))

    # ------------------------------------------------------------------ the worker
    def create_worker(self, queues: list[str], concurrency: int) -> None:
        options: dict[str, Any] = {
            "workers": concurrency,
            "worker_type": "thread",
            "periodic": False,
            # huey's workers block on the queue (BLMOVE with read_timeout); these only pace retries
            # after a storage error
            "initial_delay": 0.05, "max_delay": 1.0,
            "check_worker_health": False,  # Consumer.run()'s loop, which this host replaces
        }
        options.update(self.options.consumer_options)
        self.consumer = Consumer(self.huey, **options)
        self.holder = self.huey.queue_ops.open_holder(new_consumer_id(self.queue), self.options)  # type: ignore[attr-defined]
        # a queue whose huey name changed (funboost_huey.app.huey_name): what an earlier version left
        # under the old name runs here, instead of waiting there forever
        try:
            adopted = adopt_legacy_tasks(self.huey, self.options)
        except Exception as exc:  # never keep the consumer from starting; the next start tries again
            adopted = 0
            self.logger.warning("queue %s: could not move tasks left under the old huey name %r: %s",
                                self.queue, legacy_huey_name(self.queue), exc)
        if adopted:
            self.logger.warning("queue %s: %d task(s) left under the old huey name %r moved to %r",
                                self.queue, adopted, legacy_huey_name(self.queue),
                                self.huey.storage.name)  # type: ignore[attr-defined]

    def run_worker(self) -> None:
        consumer, holder = self.consumer, self.holder
        assert consumer is not None and holder is not None
        threads = [consumer.scheduler] + [t for _, t in consumer.worker_threads]
        for t in threads:
            t.start()
        self.accepting.set()
        self.worker_ready()
        consumer.stop_flag.wait()
        for t in threads:
            t.join(self._stop_timeout)
        self.huey.notify_interrupted_tasks()
        if any(t.is_alive() for t in threads):
            # a task still runs (a long one, past the stop timeout): its lease keeps renewing until the
            # last worker ends, then what it holds goes back (nothing a running task holds is handed out)
            threading.Thread(target=self._release_when_done, args=(threads, holder), daemon=True,
                             name=f"funboost-huey-release-{self.queue}").start()
        else:
            holder.close(give_back=True)

    @staticmethod
    def _release_when_done(threads: list[threading.Thread], holder: Holder) -> None:
        for t in threads:
            t.join()
        holder.close(give_back=True)

    def stop_worker(self, timeout: float) -> None:
        """Warm stop: workers finish the task they run (settling it) and take no more."""
        self._stop_timeout = timeout
        self.accepting.clear()
        if self.consumer is not None:
            self.consumer.stop_flag.set()

    # ------------------------------------------------------------------ pause / run-time window
    def start_queue(self, queue: str) -> None:
        self.accepting.set()

    def stop_queue(self, queue: str) -> None:
        self.accepting.clear()
