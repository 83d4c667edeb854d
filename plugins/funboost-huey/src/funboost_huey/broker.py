"""The ``huey`` broker kind: funboost's API on top of huey's queues and huey's consumer.

* publish  -> the queue's huey task (``funboost_huey.<queue>``) enqueued through huey's API with the
  funboost task id as huey's task id, ``eta`` as huey's eta, ``priority`` as huey's priority (SQLite;
  ``RedisHuey`` has none).
* consume  -> :meth:`HueyBroker.run_consumer` starts huey's ``Consumer`` (thread workers) for the queue
  in this process (:mod:`funboost_huey.worker`).
* fetch / ack / requeue -> take huey messages directly (the contract suite, ``replay_dead_letters`` on
  ``<queue>_dlx``), under this broker's own lease on Redis; a message whose eta is in the future goes
  to huey's schedule, as huey's consumer does.
* queue_size -> ready (huey's list), delayed (huey's schedule), in flight (taken, not settled; Redis);
  purge -> huey's queue and schedule.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

from huey.api import Huey

from funboost.foreign import envelope_from_foreign, eta_datetime, join_worker_host, parse_eta
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.redact import shown_url
from funboost.plugins.host import ConsumerHost

from funboost_huey.app import get_huey
from funboost_huey.options import HueyOptions
from funboost_huey.storage import Holder
from funboost_huey.worker import HueyWorkerHost


class HueyBroker(Broker):
    kind = "huey"
    capabilities = Capabilities(
        # default storage (Redis): taken tasks are kept in-flight under the taker's lease and come back
        # when it dies (funboost_huey.storage). SqliteHuey is at-most-once: see docs/brokers/huey.md
        at_least_once=True,
        persistent=True,  # as persistent as the Redis server (or the SQLite file)
        native_requeue=True,
        dead_letter=True,  # <queue>_dlx is another huey queue
        native_delay=True,  # huey's eta and schedule
        priority=False,  # RedisHuey has none (SqliteHuey has: passed through when configured)
        ordering="fifo",
        queue_size="exact",
        in_flight_count=True,
        purge=True,
        notes="at-least-once as declared with storage 'redis' (the default); storage 'sqlite' (SqliteHuey) "
              "is at-most-once (huey deletes a task's row when a worker takes it) and has no in-flight count",
    )
    options_model = HueyOptions

    def __init__(self, queue_name: str, options: Optional[HueyOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: HueyOptions
        self.huey: Huey = get_huey(queue_name, self.options)
        self.ops = self.huey.queue_ops  # type: ignore[attr-defined]
        self._with_priority = self.options.resolved_storage() == "sqlite"
        self._host: Optional[HueyWorkerHost] = None
        self._holder: Optional[Holder] = None
        self._holder_lock = threading.Lock()
        self._next_move = 0.0

    @property
    def supports_priority(self) -> bool:
        """SqliteHuey orders by priority (higher first); huey's Redis storage has none (a plain list), so
        the kind's default (Redis) declares ``priority=False`` and only SQLite storage keeps priorities."""
        return self._with_priority

    # ------------------------------------------------------------------ availability
    @classmethod
    def check_available(cls, options: HueyOptions) -> Optional[str]:
        if options.resolved_storage() != "redis":
            return None
        import redis
        url = options.resolved_redis_url()
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
            client.ping()
            client.close()
            return None
        except Exception as exc:
            return f"huey's Redis {shown_url(url)} unreachable: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ publish
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        task = self.huey.funboost_task  # type: ignore[attr-defined]
        enqueue = self.huey.enqueue
        for m in messages:
            opts: dict[str, Any] = {"id": m.task_id or None}
            if m.eta is not None:
                opts["eta"] = eta_datetime(m.eta)  # aware: huey stores it as naive UTC
            if self._with_priority and m.priority is not None:
                opts["priority"] = int(m.priority)
            enqueue(task.s(m.body, **opts))

    # ------------------------------------------------------------------ consume (the real path)
    def run_consumer(self, consumer: ConsumerHost) -> bool:
        huey, options = self.huey, self.options
        self._host = join_worker_host(("huey", options.config_key(), self.queue_name),
                                      lambda: HueyWorkerHost(huey, options), consumer)
        return True

    # ------------------------------------------------------------------ direct pull
    def _holder_id(self) -> str:
        with self._holder_lock:
            if self._holder is None:
                self._holder = self.ops.open_holder(self.consumer_id, self.options)
            return self._holder.current()

    def _delivery(self, holder: str, data: bytes) -> Optional[Delivery]:
        """The delivery of one taken message; None when it went to huey's schedule (not due yet)."""
        try:
            msg = self.huey.serializer.deserialize(data)
            args, kwargs, task_id, eta = tuple(msg.args or ()), dict(msg.kwargs or {}), msg.id, msg.eta
        except Exception:  # not a huey message: the engine dead-letters the raw text
            return Delivery(body=bytes(data).decode("latin-1"), tag=(holder, data))
        due = parse_eta(eta)
        if due is not None and due > time.time():
            self.ops.schedule(holder, data, eta)
            return None
        body = envelope_from_foreign(args, kwargs, task_id, framework="huey")
        return Delivery(body=body, tag=(holder, data), task_id=str(task_id or ""))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + max(0.0, timeout)
        out: list[Delivery] = []
        while True:
            holder = self._holder_id()
            now = time.monotonic()
            if now >= self._next_move:  # due delayed messages back into the queue (huey's scheduler's job)
                self._next_move = now + 0.1
                self.ops.move_due()
            while len(out) < max_count:
                data = self.ops.take(holder, 0)
                if data is None:
                    break
                d = self._delivery(holder, data)
                if d is not None:
                    out.append(d)
            left = deadline - time.monotonic()
            if out or left <= 0 or max_count <= 0:
                return out
            data = self.ops.take(holder, min(left, 0.1))
            if data is not None:
                d = self._delivery(holder, data)
                if d is not None:
                    out.append(d)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if d.tag is not None:  # None: run by huey's worker, which settles it when the task returns
                self.ops.settle(*d.tag)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if d.tag is not None:
                self.ops.give_back(*d.tag)

    # ------------------------------------------------------------------ size / purge
    def queue_size(self) -> QueueSize:
        storage = self.huey.storage
        return QueueSize(ready=int(storage.queue_size()), in_flight=self.ops.in_flight(),
                         delayed=int(storage.schedule_size()))

    def purge(self) -> int:
        return self.ops.purge()

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.remove(self.queue_name)
        with self._holder_lock:
            holder, self._holder = self._holder, None
        if holder is not None:
            holder.close(give_back=True)  # pulled, never acked: back to the queue
        super().close()


def huey_instance(booster: Any) -> Huey:
    """The Huey instance behind a HUEY booster (huey's API: ``pending()``, ``scheduled()``, ``flush()``...)."""
    return get_huey(booster.queue_name, booster.broker_options)


def huey_task(booster: Any) -> Any:
    """The huey task of a HUEY booster's queue, for plain huey callers: ``huey_task(b)(x=1, y=2)``."""
    return huey_instance(booster).funboost_task
