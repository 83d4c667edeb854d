"""The rq workers that run this process's RQ boosters: the framing on core's foreign-worker host.

Why rq's ``SimpleWorker`` in threads, not the forking ``Worker``: rq's forking worker runs every job in a
fresh child process (a fork per job), whose funboost consumer would be a copy that cannot keep the
queue's state (qps slots, pause flags, the RPC/status writers, their batching) across jobs, and a fork per
job costs far more than the funboost run itself. ``SimpleWorker`` runs the job in its own thread, which
is what funboost's consumer needs. An rq worker runs one job at a time, so ``concurrent_num`` becomes
that many ``SimpleWorker`` threads on the queue; ``multi_process_consume(n)`` gives each process its own
set. Each thread is a real rq worker (registered, visible to ``rq info`` and dashboards, honouring
``rq suspend``), serving one queue so that rq's ``BLMOVE`` into the intermediate list protects the job
between dequeue and registration.

Pause, the run-time window and a booster that stops: the queue's worker threads are asked to stop (after
the job they run) and new ones start on resume.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout
from rq.timeouts import BaseDeathPenalty

from funboost.engine.liveness import ConsumerLease, LeaseInfo, Tick, ticker
from funboost.foreign import ForeignWorkerHost
from funboost.plugins.host import ConsumerHost

from funboost_rq import storage
from funboost_rq.job import bind_worker
from funboost_rq.options import RqOptions

#: an idle worker thread checks for a stop request this often (seconds; rq's BLMOVE timeout)
IDLE_POLL_SECONDS = 1


class NoDeathPenalty(BaseDeathPenalty):
    """funboost's runner enforces ``function_timeout``; rq's SIGALRM timeout only works in the main thread."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


_taker = threading.local()  # the worker of this thread, while it dequeues (see _TakingQueue.lmove)


class _TakingQueue(Queue):
    """rq's queue whose take (rq's ``LMOVE`` / ``BLMOVE`` into the intermediate list) also notes which lease
    holds the job id, in the same script (:func:`funboost_rq.storage.take`): a worker killed right after the
    take leaves an id whose holder is known, so it comes back as soon as that holder is judged dead."""

    @classmethod
    def lmove(cls, connection: Redis, queue_key: str, timeout: Optional[int]) -> Any:
        worker: Optional["FunboostRqWorker"] = getattr(_taker, "worker", None)
        if worker is None:  # not one of funboost's workers: rq's own take
            return super().lmove(connection, queue_key, timeout)
        keys, name, lease_id = worker.keys, worker.name, worker.host.lease.consumer_id
        job_id = storage.take(connection, keys, name, lease_id)
        if job_id is None and timeout is not None:
            if not storage.block_for_job(connection, keys, name, timeout):
                raise DequeueTimeout(timeout, queue_key)
            job_id = storage.take(connection, keys, name, lease_id)  # the id the block moved to its own list
        return None if job_id is None else (queue_key, job_id)


class FunboostRqWorker(SimpleWorker):
    """rq's in-process worker, embedded in a thread of the user's process."""

    death_penalty_class = NoDeathPenalty
    queue_class = _TakingQueue

    def __init__(self, host: "RqWorkerHost", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.give_back_current = False
        self.keys: storage.QueueKeys = host.keys[self.queues[0].name]  # one queue per worker

    # embedded: the process's signals, title and rq's per-worker pubsub thread belong to the user
    def _install_signal_handlers(self) -> None:
        pass

    def procline(self, message: str) -> None:
        pass

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

    def request_stop_soon(self) -> None:
        self._stop_requested = True

    def heartbeat(self, timeout: Optional[int] = None, pipeline: Any = None) -> None:
        # rq sends a heartbeat's three commands one by one, twice per job (before and after the dequeue):
        # one pipelined round trip each here
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()

    def dequeue_job_and_maintain_ttl(self, timeout: Optional[int], max_idle_time: Optional[int] = None) -> Any:
        # rq blocks until a job comes; poll in short blocks so that a stop request is seen promptly
        _taker.worker = self  # the take notes this worker's lease next to the id (_TakingQueue.lmove)
        try:
            return self._dequeue_until_stopped()
        finally:
            _taker.worker = None

    def _dequeue_until_stopped(self) -> Any:
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(IDLE_POLL_SECONDS, IDLE_POLL_SECONDS)
            if result is not None:
                # in the intermediate list, noted under this worker's lease, until rq registers it as started
                if self._stop_requested:  # taken while asked to stop (pause, booster left): hand it back
                    job, queue = result
                    storage.from_intermediate(self.connection, self.host.keys[queue.name], job.id)
                    return None
                return result
        return None

    def handle_job_success(self, job: Any, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        if not self.give_back_current:
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        # the consumer stopped before running it: the job goes back to the front of its queue unchanged
        self.give_back_current = False
        if storage.give_back(self.connection, self.host.keys[queue.name], execution.composite_key, job.id):
            with self.connection.pipeline() as pipe:
                execution.delete(job=job, pipeline=pipe)
                pipe.execute()
        self.executions.pop(execution.id, None)


class RqWorkerHost(ForeignWorkerHost):
    framework = "rq"

    def __init__(self, options: RqOptions) -> None:
        super().__init__()
        self.options = options
        self.conn: Redis = storage.redis_client(options)
        self.keys: dict[str, storage.QueueKeys] = {}
        self.groups: dict[str, list[tuple[FunboostRqWorker, threading.Thread]]] = {}
        self.lease = ConsumerLease("rq", storage.new_lease_id(), heartbeat_interval=options.heartbeat_interval,
                                   heartbeat_timeout=options.heartbeat_timeout, renew=self._renew,
                                   reclaim=self._reclaim, reclaim_interval=options.reclaim_interval,
                                   check_pid=options.check_pid, new_id=storage.new_lease_id)
        self._done = threading.Event()
        self._initial: list[str] = []
        self._promotion: Optional[Tick] = None
        self._seq = 0
        self._retiring: list[tuple[FunboostRqWorker, threading.Thread]] = []  # asked to stop, may still run a job

    # ------------------------------------------------------------------ ForeignWorkerHost
    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        if queue not in self.keys:
            self.keys[queue] = storage.QueueKeys(Queue(queue, connection=self.conn))

    def create_worker(self, queues: list[str], concurrency: int) -> None:
        self._initial = list(queues)
        self.lease.start()  # the lease exists before any worker takes a job

    def run_worker(self) -> None:
        self._promotion = ticker().every(self.options.schedule_poll_interval, self._promote,
                                         name="funboost-rq scheduled jobs")
        try:
            try:  # before rq's maintenance in the new workers could file jobs of long-dead workers as failed
                self._reclaim()
            except Exception as exc:  # Redis away for a moment: the lease's reclaim passes retry
                self.logger.warning("first reclaim pass failed: %s", exc)
            with self.lock:
                for queue in self._initial:
                    self._start_group(queue)
            self.worker_ready()
            self._done.wait()
        finally:
            self._promotion.cancel()
            with self.lock:
                for queue in list(self.groups):
                    self._stop_group(queue)
                retiring = list(self._retiring)
            # every thread, also those of queues stopped earlier (pause, a booster that stopped: the control
            # loop stops its queue as soon as the consumer stops): each finishes rq's bookkeeping of its last
            # job (out of the started registry) before the lease goes, else the next consumer re-runs the job
            for _, thread in retiring:
                thread.join(60)
            self.lease.stop()
            try:
                storage.drop_lease(self.conn, self.lease.consumer_id)  # nothing is held any more
            except Exception:
                self.logger.warning("could not drop the rq worker lease %s", self.lease.consumer_id)

    def stop_worker(self, timeout: float) -> None:
        self._done.set()

    def start_queue(self, queue: str) -> None:
        self._start_group(queue)

    def stop_queue(self, queue: str) -> None:
        self._stop_group(queue)

    # ------------------------------------------------------------------ worker threads of a queue
    def _start_group(self, queue: str) -> None:
        consumer = self.consumers.get(queue)
        if consumer is None or queue in self.groups:
            return
        group = []
        for _ in range(max(1, consumer.concurrency)):
            self._seq += 1
            worker = FunboostRqWorker(
                self, [queue], connection=self.conn,
                name=f"{storage.WORKER_PREFIX}{self.lease.consumer_id}.{self._seq}",
                default_result_ttl=self.options.result_ttl, **self.options.worker_options)
            thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                      name=f"funboost-rq-{queue}-{self._seq}")
            group.append((worker, thread))
            # before its first take: a reclaim pass must find the worker's own list should it die
            storage.register_taker(self.conn, self.keys[queue], worker.name)
        self.groups[queue] = group
        for _, thread in group:
            thread.start()

    def _stop_group(self, queue: str) -> None:
        """Ask the queue's worker threads to stop after the job each runs (run_worker joins them)."""
        group = self.groups.pop(queue, [])
        for worker, _ in group:
            worker.request_stop_soon()
        self._retiring = [wt for wt in self._retiring if wt[1].is_alive()] + group

    def _work(self, worker: FunboostRqWorker) -> None:
        bind_worker(worker)
        try:
            worker.work(logging_level="WARNING", with_scheduler=False)
        except Exception:
            self.logger.exception("rq worker %s ended with an error", worker.name)
        finally:
            try:  # an id its block took and the take did not move on (an error in between) goes back
                storage.release_taker(self.conn, worker.keys, worker.name)
            except Exception as exc:  # Redis away: the reclaim passes of other consumers put it back
                self.logger.warning("rq worker %s: could not release its own list: %s", worker.name, exc)

    # ------------------------------------------------------------------ liveness and scheduling
    def _held_entries(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        workers = [w for group in list(self.groups.values()) for w, _ in group]
        workers += [w for w, t in list(self._retiring) if t.is_alive()]
        for worker in workers:
            started = self.keys[worker.queues[0].name].started
            for execution in list(worker.executions.values()):
                out.setdefault(started, []).append(execution.composite_key)
        return out

    def _renew(self, info: LeaseInfo) -> None:
        storage.write_lease(self.conn, info, self._held_entries(),
                            info.last_seen + storage.entry_ttl(self.options))

    def _reclaim(self) -> None:
        n = storage.reclaim(self.conn, self.lease, [self.keys[q] for q in list(self.consumers)])
        if n:
            self.logger.warning("put %d jobs of dead rq workers back into their queues", n)

    def _promote(self) -> None:
        for queue in list(self.consumers):
            storage.promote_due(self.conn, self.keys[queue])
