"""The dramatiq ``Worker`` that runs this process's DRAMATIQ boosters: the framing on core's foreign-worker host.

Each queue is a dramatiq actor named after the queue (``max_retries=0``, ``FunboostTaskFailed`` in its
``throws``) whose body hands the envelope to funboost (``run_message``); the worker is dramatiq's own
threaded ``Worker`` in this process with ``worker_threads`` = the boosters' ``concurrent_num`` added up.

Why the in-process ``Worker`` and not the ``dramatiq`` CLI (which forks worker processes): the actor
body needs this process's funboost consumer (its state backend, its controls kept current by the
control thread, the user's function as decorated here). ``multi_process_consume(n)`` gives one such
worker per process.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import dramatiq
from dramatiq.common import dq_name
from dramatiq.middleware import CurrentMessage

from funboost.foreign import ForeignWorkerHost, Verb, envelope_from_foreign
from funboost.plugins.host import ConsumerHost

from funboost_dramatiq.app import build_broker
from funboost_dramatiq.heartbeat import RedisHeartbeat
from funboost_dramatiq.options import DramatiqOptions


class FunboostTaskFailed(Exception):
    """Raised from the actor when the funboost function failed for good (after funboost's retries):
    dramatiq marks the message failed and moves it to its dead-letter queue ``<queue>.XQ``."""


def envelope_from_dramatiq(args: tuple, kwargs: dict, message_id: Optional[str]) -> Any:
    """The funboost envelope carried by a dramatiq message (see :func:`funboost.foreign.envelope_from_foreign`)."""
    return envelope_from_foreign(args, kwargs, message_id, framework="dramatiq")


def give_back(broker: dramatiq.Broker, message: Any) -> None:
    """Put a message the worker took but must not run back on its queue (then the worker acks the taken one)."""
    broker.enqueue(dramatiq.Message(queue_name=message.queue_name, actor_name=message.actor_name,
                                    args=tuple(message.args), kwargs=dict(message.kwargs), options={},
                                    message_id=message.message_id, message_timestamp=message.message_timestamp))


class DramatiqWorkerHost(ForeignWorkerHost):
    framework = "dramatiq"
    # a paused dramatiq consumer thread closes its consumer, and RabbitMQ then delivers again what the
    # worker threads hold: a message that arrives while the queue may not run is given back instead
    holds_messages_while_paused = False

    def __init__(self, options: DramatiqOptions) -> None:
        super().__init__()
        self.options = options
        self.broker: dramatiq.Broker = build_broker(options)
        self.heartbeat: Optional[RedisHeartbeat] = RedisHeartbeat(self.broker) if options.family() == "redis" else None
        self.worker: Optional[dramatiq.Worker] = None
        self._stop = threading.Event()
        self._stop_timeout = 30.0
        self._consumed: set[str] = set()  # queues the worker has consumers (and threads) for

    # ------------------------------------------------------------------ the actor of a queue
    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        if queue in self.broker.actors:  # joined again while the worker kept running for others
            return
        dramatiq.Actor(self._body(queue), broker=self.broker, actor_name=queue, queue_name=queue, priority=0,
                       options={"max_retries": 0, "throws": (FunboostTaskFailed,)})

    def _body(self, queue: str) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            message = CurrentMessage.get_current_message()
            outcome = self.run_message(queue, envelope_from_dramatiq(args, kwargs, message and message.message_id),
                                       redelivered=bool(getattr(message, "redelivered", False)))
            if outcome.verb is Verb.FAIL:
                raise FunboostTaskFailed(outcome.error)
            if outcome.verb is Verb.REJECT and message is not None:
                give_back(self.broker, message)
            # ACK / IGNORE: the message is done. The return value goes through funboost's RPC result;
            # returning it here would only make dramatiq warn that it has no Results middleware.
        run.__name__ = run.__qualname__ = queue
        return run

    # ------------------------------------------------------------------ the worker
    def create_worker(self, queues: list[str], concurrency: int) -> None:
        self.worker = dramatiq.Worker(self.broker, queues=set(queues), worker_threads=concurrency)
        self._consumed = set(queues)

    def run_worker(self) -> None:
        worker = self.worker
        assert worker is not None
        worker.start()  # consumer threads for each whitelisted queue and its delay queue
        if self.heartbeat is not None:
            for queue in self._consumed:
                self.heartbeat.watch(queue)
        try:
            self.worker_ready()
            self._stop.wait()
        finally:
            try:
                # stops worker threads after their current message, then consumers; requeues what they hold
                worker.stop(timeout=int(self._stop_timeout * 1000))
            finally:
                if self.heartbeat is not None:
                    self.heartbeat.cancel()
                self.broker.close()

    def stop_worker(self, timeout: float) -> None:
        self._stop_timeout = max(timeout, 1.0)
        self._stop.set()

    # ------------------------------------------------------------------ queues at run time
    def start_queue(self, queue: str) -> None:
        worker = self.worker
        if worker is None:
            return
        consumer = worker.consumers.get(queue)
        if consumer is not None:
            consumer.resume()
            return
        # a booster that joined the running worker: whitelist its queue, add its consumers and its threads
        if isinstance(worker.consumer_whitelist, set):
            worker.consumer_whitelist.add(queue)
        worker._add_consumer(queue)
        worker._add_consumer(dq_name(queue), delay=True)
        if queue not in self._consumed:
            self._consumed.add(queue)
            joined = self.consumers.get(queue)
            for _ in range(joined.concurrency if joined is not None else 1):
                worker._add_worker()
        if self.heartbeat is not None:
            self.heartbeat.watch(queue)

    def stop_queue(self, queue: str) -> None:
        # pause the queue's consumer thread: it stops fetching (delayed messages still move when due)
        worker = self.worker
        consumer = worker.consumers.get(queue) if worker is not None else None
        if consumer is not None:
            consumer.pause()
