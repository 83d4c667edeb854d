"""The ``rq`` broker kind: funboost's API on top of rq's queues, registries and workers (on Redis).

* publish -> rq jobs through rq's own API: ``Queue.enqueue_many`` (one pipeline per batch), jobs with a
  countdown / eta through ``Queue.schedule_job`` (what ``enqueue_at`` / ``enqueue_in`` do) into the
  queue's ``ScheduledJobRegistry``; the rq job id is the funboost task id, rq's ``retry`` is None
  (funboost's runner is the only retry) and the job timeout is infinite (funboost's ``function_timeout``).
* consume -> :meth:`RqBroker.run_consumer` joins this process's :class:`~funboost_rq.worker.RqWorkerHost`:
  ``concurrent_num`` rq ``SimpleWorker`` threads on the queue.
* fetch / ack / requeue -> for tools that pull directly (the contract suite, ``replay_dead_letters`` on
  ``<queue>_dlx``): job ids leave the queue into its ``StartedJobRegistry`` in one step, under a lease.
* queue_size -> the queue's length, its started registry (in flight) and scheduled registry (delayed);
  purge -> ``Queue.empty()`` and the scheduled jobs.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Optional, Sequence

from pydantic import BaseModel
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import JOB_ID_PATTERN, Job

from funboost.engine.liveness import ConsumerLease, LeaseInfo
from funboost.foreign import envelope_from_foreign, eta_datetime, join_worker_host, poll_until
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.redact import shown_url
from funboost.plugins.host import ConsumerHost

from funboost_rq import storage
from funboost_rq.job import job_path
from funboost_rq.options import RqOptions
from funboost_rq.worker import RqWorkerHost

PULL_POLL_SECONDS = 0.05


class RqBroker(Broker):
    kind = "rq"
    capabilities = Capabilities(
        # a started job of a dead worker goes back to its queue (leases: funboost_rq.storage)
        at_least_once=True,
        persistent=True,  # as persistent as the Redis server
        native_requeue=True,
        dead_letter=True,  # <queue>_dlx is another rq queue
        native_delay=True,  # rq's ScheduledJobRegistry
        priority=False,  # rq has no priorities (only at_front)
        ordering="fifo",
        queue_size="exact",
        in_flight_count=True,  # the StartedJobRegistry
        purge=True,
    )
    options_model = RqOptions

    def __init__(self, queue_name: str, options: Optional[RqOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: RqOptions
        self.conn = storage.redis_client(self.options)
        self.queue = Queue(queue_name, connection=self.conn)
        self.keys = storage.QueueKeys(self.queue)
        self._func = job_path(queue_name)
        self._host: Optional[RqWorkerHost] = None
        self._registered = False  # the queue is in rq's set of queues (rq:queues)
        self._lease: Optional[ConsumerLease] = None  # of the pull path, made on first fetch
        self._held: set[str] = set()  # started entries this instance pulled and did not settle
        self._lock = threading.Lock()

    @classmethod
    def check_available(cls, options: BaseModel) -> Optional[str]:
        from redis import Redis
        assert isinstance(options, RqOptions)
        url = options.resolved_redis_url()
        try:
            Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
            return None
        except Exception as exc:
            return f"rq's Redis {shown_url(url)} unreachable: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ publish
    def _job_ids(self, messages: Sequence[OutgoingMessage]) -> list[Optional[str]]:
        """The rq job id of each message: its funboost task id, unless

        * rq does not accept that id (rq allows letters, digits, ``_`` and ``-``): rq makes one;
        * an rq job of that id exists (rq keeps one job hash per id, across all queues: the running job of
          a task that funboost republishes, its dead-letter copy, a finished job still kept, or the same
          task id published twice): ``<task id>-<random>``, so that no message overwrites another.

        The envelope always keeps the funboost task id. One pipelined ``EXISTS`` per batch."""
        wanted = [m.task_id if m.task_id and JOB_ID_PATTERN.fullmatch(m.task_id) else None for m in messages]
        candidates = sorted({w for w in wanted if w})
        taken: set[str] = set()
        if candidates:
            pipe = self.conn.pipeline(transaction=False)
            for candidate in candidates:
                pipe.exists(storage.job_key(candidate))
            taken = {j for j, n in zip(candidates, pipe.execute()) if n}
        out: list[Optional[str]] = []
        for job_id in wanted:
            if job_id is not None and job_id in taken:
                job_id = f"{job_id}-{uuid.uuid4().hex[:8]}"
            elif job_id is not None:
                taken.add(job_id)  # a second message of the same id in this batch gets its own
            out.append(job_id)
        return out

    def _job_fields(self, m: OutgoingMessage, job_id: Optional[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {"args": (m.body,), "job_id": job_id, "timeout": -1,
                                  "result_ttl": self.options.result_ttl, "failure_ttl": self.options.failure_ttl,
                                  "description": self.queue_name}
        if m.eta is not None:
            fields["meta"] = {"funboost_eta": m.eta}
        return fields

    def _enqueue_one(self, m: OutgoingMessage) -> bool:
        """The common case, one message due now, in one round trip: rq's unique enqueue (one atomic script:
        the job is written under the task id unless a job of that id exists). False on such a duplicate.

        ``enqueue_job`` queues rq's bookkeeping ``SADD rq:queues`` in the pipeline it is given (the unique
        write itself ignores it); the queue was registered there once, so that pipeline is discarded."""
        if not self._registered:
            self.conn.sadd(self.queue.redis_queues_keys, self.queue.key)
            self._registered = True
        job = self.queue.create_job(self._func, **self._job_fields(m, m.task_id))
        pipe = self.conn.pipeline()
        try:
            self.queue.enqueue_job(job, pipeline=pipe, unique=True)
            return True
        except DuplicateJobError:
            return False
        finally:
            pipe.reset()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        if len(messages) == 1:
            m = messages[0]
            if m.eta is None and m.task_id and JOB_ID_PATTERN.fullmatch(m.task_id) and self._enqueue_one(m):
                return
        ids = self._job_ids(messages)
        now = [(m, i) for m, i in zip(messages, ids) if m.eta is None]
        later = [(m, i, m.eta) for m, i in zip(messages, ids) if m.eta is not None]
        if now:
            self.queue.enqueue_many([Queue.prepare_data(self._func, **self._job_fields(m, i)) for m, i in now])
        if later:
            with self.conn.pipeline() as pipe:
                for m, i, eta in later:
                    job = self.queue.create_job(self._func, **self._job_fields(m, i))
                    self.queue.schedule_job(job, eta_datetime(eta), pipeline=pipe)
                    # rq scores in whole seconds; the exact due time lets a job run on time, not up to 1 s early
                    pipe.zadd(self.keys.scheduled, {job.id: eta})
                pipe.execute()

    # ------------------------------------------------------------------ consume (the real path)
    def run_consumer(self, consumer: ConsumerHost) -> bool:
        options = self.options
        self._host = join_worker_host(("rq", options.config_key()), lambda: RqWorkerHost(options), consumer)
        return True

    # ------------------------------------------------------------------ direct pull
    def _pull_lease(self) -> ConsumerLease:
        if self._lease is None:
            o = self.options
            self._lease = ConsumerLease(self.queue_name, storage.new_lease_id(), heartbeat_interval=o.heartbeat_interval,
                                        heartbeat_timeout=o.heartbeat_timeout, renew=self._renew,
                                        reclaim_interval=o.reclaim_interval, check_pid=o.check_pid,
                                        new_id=storage.new_lease_id, on_new_identity=lambda _id: self._held.clear())
        if not self._lease.running:
            self._lease.start()
        return self._lease

    def _renew(self, info: LeaseInfo) -> None:
        with self._lock:
            held = list(self._held)
        storage.write_lease(self.conn, info, {self.keys.started: held}, info.last_seen + storage.entry_ttl(self.options))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        lease = self._pull_lease()

        def pull() -> list[Delivery]:
            if lease.reclaim_due():
                storage.reclaim(self.conn, lease, [self.keys])
            storage.promote_due(self.conn, self.keys)  # due delayed jobs onto the queue (rq's scheduler's job)
            return self._pull(max_count, lease.consumer_id) if max_count > 0 else []

        return poll_until(pull, timeout, interval=PULL_POLL_SECONDS)

    def _pull(self, max_count: int, holder: str) -> list[Delivery]:
        expiry = time.time() + storage.entry_ttl(self.options)
        suffix = storage.PULL_PREFIX + holder
        with self._lock:  # held before the script runs: a renewal never misses an entry
            ids = storage.pull(self.conn, self.keys, max_count, holder, expiry)
            self._held.update(f"{i}:{suffix}" for i in ids)
        out = []
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=self.conn) if ids else []):
            entry = f"{job_id}:{suffix}"
            if job is None:  # its hash expired or was deleted: nothing to run
                self._settle([entry])
                continue
            body = envelope_from_foreign(tuple(job.args or ()), dict(job.kwargs or {}), job.id, framework="rq")
            out.append(Delivery(body=body, tag=(entry, job_id), task_id=job.id))
        return out

    def _settle(self, entries: list[str], delete_ids: Sequence[str] = ()) -> None:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.started, *entries)
            for job_id in delete_ids:
                pipe.delete(storage.job_key(job_id))
            pipe.execute()
        with self._lock:
            self._held.difference_update(entries)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pulled = [d.tag for d in deliveries if d.tag is not None]
        if pulled:  # worker-run deliveries (tag None) are settled by the rq worker
            self._settle([e for e, _ in pulled], [j for _, j in pulled])

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if d.tag is not None:
                entry, job_id = d.tag
                storage.give_back(self.conn, self.keys, entry, job_id)
                with self._lock:
                    self._held.discard(entry)

    # ------------------------------------------------------------------ size / purge
    def queue_size(self) -> QueueSize:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.llen(self.keys.queue)
            pipe.zcard(self.keys.started)
            pipe.zcard(self.keys.scheduled)
            ready, in_flight, delayed = pipe.execute()
        return QueueSize(ready=int(ready), in_flight=int(in_flight), delayed=int(delayed))

    def purge(self) -> int:
        """Drop the waiting jobs: the queue (rq's ``Queue.empty()``) and its scheduled (delayed) jobs."""
        n = int(self.queue.empty() or 0)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self.conn.zrange(self.keys.scheduled, 0, -1)]
        if ids:
            with self.conn.pipeline() as pipe:
                pipe.zrem(self.keys.scheduled, *ids)
                pipe.delete(*(storage.job_key(i) for i in ids))
                removed, _ = pipe.execute()
            n += int(removed)
        return n

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.remove(self.queue_name)
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.stop()
            with self._lock:
                held = list(self._held)
                self._held.clear()
            for entry in held:  # pulled, never settled: back to the queue now rather than after a reclaim
                storage.give_back(self.conn, self.keys, entry, entry.partition(":")[0])
            try:
                storage.drop_lease(self.conn, lease.consumer_id)
            except Exception:
                pass
        super().close()


def rq_queue(booster: Any) -> Queue:
    """The rq ``Queue`` behind an RQ booster (for rq tooling: registries, jobs, ``Job.fetch``)."""
    return Queue(booster.queue_name, connection=storage.redis_client(booster.broker_options))
