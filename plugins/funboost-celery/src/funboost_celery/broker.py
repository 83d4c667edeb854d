"""The ``celery`` broker kind: funboost's API on top of a real Celery app and worker.

* publish  -> ``app.send_task(queue_name, args=[envelope_json], task_id=<funboost task id>,
  queue=queue_name, eta=..., priority=...)`` through the app's producer pool.
* consume  -> :meth:`CeleryBroker.run_consumer` starts (once per process) a Celery worker with a threads
  pool; the task body runs the envelope through funboost's consumer (see :mod:`funboost_celery.worker`).
* fetch / ack / requeue -> kombu ``basic_get`` on the same queue, for tools that pull messages
  directly (the contract suite, ``replay_dead_letters`` on ``<queue>_dlx``). A message whose Celery
  eta is in the future is held here unacked until due, as a Celery worker holds it.
* queue_size / purge -> kombu ``queue_declare(passive=True)`` / ``queue_purge`` on Celery's connection.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

from celery import Celery

from funboost.foreign import HeldMessages, eta_datetime, join_worker_host, parse_eta, poll_until
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.redact import shown_url
from funboost.plugins.host import ConsumerHost

from funboost_celery.app import config_key, get_app, transport_family
from funboost_celery.options import CeleryOptions
from funboost_celery.worker import CeleryWorkerHost, envelope_from_celery

_ACCEPT = ["json"]


class CeleryBroker(Broker):
    kind = "celery"
    capabilities = Capabilities(
        # acks_late + reject_on_worker_lost; AMQP redelivers when the connection drops, Redis when the
        # holder process is gone or its lease ran out: funboost_celery.lease
        at_least_once=True,
        persistent=True,  # durable queues, persistent delivery mode (Redis: as persistent as the server)
        native_requeue=True,
        dead_letter=True,  # <queue>_dlx is another Celery queue
        native_delay=True,  # Celery eta/countdown (held by the worker, unacked, until due)
        priority=True,
        max_priority=9,
        ordering="fifo",
        queue_size="exact",
        in_flight_count=False,
        purge=True,
    )
    options_model = CeleryOptions

    def __init__(self, queue_name: str, options: Optional[CeleryOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: CeleryOptions
        self.app: Celery = get_app(self.options)
        self.family = transport_family(self.options.resolved_broker_url())
        top = self.options.max_priority
        if top is not None and self.family == "redis":
            top = min(top, 9)  # kombu's Redis transport knows 0..9
        self._top_priority = top
        self._lock = threading.Lock()  # guards the kombu connection used by fetch/ack/size/purge
        self._conn: Any = None
        self._chan: Any = None
        self._bound: Any = None
        self._last_restore = 0.0
        self._held: HeldMessages[Delivery] = HeldMessages()  # fetched before their eta
        self._host: Optional[CeleryWorkerHost] = None
        self._pub_lock = threading.Lock()
        self._producer: Any = None

    # ------------------------------------------------------------------ availability
    @classmethod
    def check_available(cls, options: CeleryOptions) -> Optional[str]:
        url = options.resolved_broker_url()
        from kombu import Connection
        try:
            with Connection(url, connect_timeout=3, transport_options={"socket_connect_timeout": 3,
                                                                       "socket_timeout": 3}) as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                conn.default_channel  # redis connects lazily; this makes it talk to the server
            return None
        except Exception as exc:  # any failure means "not reachable" for the test suites
            return f"Celery broker {shown_url(url)} unreachable: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ priorities
    def _celery_priority(self, priority: Optional[int]) -> Optional[int]:
        """funboost priority (higher runs first; none = lowest) to Celery's for this transport."""
        top = self._top_priority
        if top is None:
            return None
        p = 0 if priority is None else max(0, min(int(priority), top))
        if self.family == "redis":
            return top - p  # kombu's Redis transport serves its priority 0 list first
        return p if priority is not None else None

    # ------------------------------------------------------------------ publish
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        # One long-lived producer per broker instance saves a pool acquire/release per message (about
        # a tenth of Celery's publish cost). kombu producers are not thread-safe: a thread that finds it
        # busy takes one from Celery's pool instead of waiting.
        if self._pub_lock.acquire(blocking=False):
            try:
                if self._producer is None:
                    self._producer = self.app.amqp.Producer(self.app.connection_for_write(), auto_declare=False)
                self._send(messages, self._producer)
            finally:
                self._pub_lock.release()
        else:
            with self.app.producer_or_acquire() as producer:
                self._send(messages, producer)

    def _send(self, messages: Sequence[OutgoingMessage], producer: Any) -> None:
        send = self.app.send_task
        name = self.queue_name
        for m in messages:
            opts: dict[str, Any] = {}
            if m.eta is not None:
                opts["eta"] = eta_datetime(m.eta)
            prio = self._celery_priority(m.priority)
            if prio is not None:
                opts["priority"] = prio
            send(name, args=(m.body,), task_id=m.task_id or None, queue=name, producer=producer, **opts)

    # ------------------------------------------------------------------ consume (the real path)
    def run_consumer(self, consumer: ConsumerHost) -> bool:
        app, options = self.app, self.options
        self._host = join_worker_host(("celery", config_key(options)), lambda: CeleryWorkerHost(app, options),
                                      consumer)
        return True

    # ------------------------------------------------------------------ direct pull (kombu)
    def _queue(self) -> Any:
        """The kombu queue bound to our channel, declared as Celery declares it (caller holds the lock)."""
        if self._bound is None or self._chan is None:
            if self._conn is None:
                self._conn = self.app.connection_for_read()
            self._chan = self._conn.channel()
            q = self.app.amqp.queues[self.queue_name]
            self._bound = q(self._chan)
            self._bound.declare()
        return self._bound

    def _reset_channel(self) -> None:
        try:
            if self._chan is not None:
                self._chan.close()
        except Exception:
            pass
        self._chan = self._bound = None

    def _to_delivery(self, msg: Any) -> Delivery:
        headers = msg.headers or {}
        task_id = headers.get("id")
        payload = msg.decode()
        if isinstance(payload, (list, tuple)) and len(payload) >= 2:  # Celery protocol 2
            args, kwargs = payload[0], payload[1]
        elif isinstance(payload, dict):  # protocol 1
            args, kwargs = payload.get("args") or (), payload.get("kwargs") or {}
            task_id = task_id or payload.get("id")
        else:
            args, kwargs = (payload,), {}
        body = envelope_from_celery(tuple(args), dict(kwargs), task_id)
        return Delivery(body=body, tag=msg, redelivered=bool((msg.delivery_info or {}).get("redelivered")),
                        task_id=task_id or "")

    def _pull(self, max_count: int) -> list[Delivery]:
        """One pass: the held messages now due, then the queue's ready ones (a message whose eta is in the
        future is held, unacked, as a Celery worker holds it)."""
        now = time.time()
        with self._lock:
            out = self._held.pop_due(max_count, now)
            q = self._queue()
            while len(out) < max_count:
                msg = q.get(no_ack=False, accept=_ACCEPT)
                if msg is None:
                    break
                d = self._to_delivery(msg)
                eta = parse_eta((msg.headers or {}).get("eta"))
                if eta is not None and eta > now:
                    self._held.hold(eta, d)
                    continue
                out.append(d)
            if not out:
                self._maybe_restore()
        return out

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        return poll_until(lambda: self._pull(max_count), timeout, held=self._held)

    def _maybe_restore(self) -> None:
        """Redis transport: messages taken by a consumer that died come back once their visibility
        timeout passed. Celery workers scan for them in their loop; a bare puller must ask."""
        if self.family != "redis":
            return
        now = time.monotonic()
        if now - self._last_restore < 1.0:
            return
        self._last_restore = now
        restore = getattr(getattr(self._chan, "qos", None), "restore_visible", None)
        if restore is not None:
            try:
                restore(num=100, interval=1)
            except Exception:
                pass

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pulled = [d for d in deliveries if d.tag is not None]
        if not pulled:
            return  # deliveries run by the Celery worker: Celery acks them when the task returns
        with self._lock:
            for d in pulled:
                d.tag.ack()

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        pulled = [d for d in deliveries if d.tag is not None]
        if pulled:
            with self._lock:
                for d in pulled:
                    d.tag.requeue()
        # a worker-run delivery (tag None) is never handed back here: the engine republishes
        # (ExceptionForRequeue) or Celery redelivers the unacked message

    # ------------------------------------------------------------------ size / purge
    def _declare_passive(self) -> int:
        with self._lock:
            self._queue()
            try:
                ok = self._chan.queue_declare(queue=self.queue_name, passive=True)
            except self._conn.channel_errors:
                self._reset_channel()  # AMQP closes the channel on NOT_FOUND; Redis: no such lists
                return 0
            return int(ok.message_count)

    def queue_size(self) -> QueueSize:
        return QueueSize(ready=self._declare_passive(), in_flight=None, delayed=None)

    def purge(self) -> int:
        with self._lock:
            self._queue()
            try:
                n = self._chan.queue_purge(self.queue_name)
            except self._conn.channel_errors:
                self._reset_channel()
                return 0
        return int(n or 0)

    def delete_queue(self) -> None:
        """Drop the queue itself (tests, tools)."""
        with self._lock:
            self._queue()
            try:
                self._bound.delete()
            except Exception:
                pass
            self._reset_channel()

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.remove(self.queue_name)
        with self._pub_lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    producer.connection.release()
                except Exception:
                    pass
        with self._lock:
            self._held.clear()
            self._reset_channel()  # Redis restores unacked pulled messages; AMQP requeues them
            if self._conn is not None:
                try:
                    self._conn.release()
                except Exception:
                    pass
                self._conn = None
        super().close()


def celery_app(booster: Any) -> Celery:
    """The Celery app behind a CELERY booster (for Celery tooling: inspect, control, AsyncResult)."""
    return get_app(booster.broker_options)


def celery_async_result(booster: Any, task_id: str) -> Any:
    """Celery's AsyncResult for a funboost task id (needs a Celery result backend)."""
    return celery_app(booster).AsyncResult(str(task_id))
