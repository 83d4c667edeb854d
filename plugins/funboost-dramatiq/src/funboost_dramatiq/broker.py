"""The ``dramatiq`` broker kind: funboost's API on dramatiq's own brokers and Worker.

* publish -> ``broker.enqueue(dramatiq.Message(queue_name=q, actor_name=q, args=(envelope,),
  message_id=<funboost task id>), delay=<ms until eta>)``: dramatiq's Redis or RabbitMQ broker.
* consume -> :meth:`DramatiqBroker.run_consumer` starts (once per process) a dramatiq ``Worker``
  whose actor per queue runs the envelope through funboost (see :mod:`funboost_dramatiq.worker`).
* fetch / ack / requeue -> the same storage pulled directly, for tools (the contract suite,
  ``replay_dead_letters`` on ``<queue>_dlx``): Redis through the broker's own dispatch commands
  (``fetch``/``ack``/``requeue`` of dispatch.lua, so a pulled message is in this broker's ack set and
  comes back if the process dies), RabbitMQ through ``basic_get`` on dramatiq's channel. A delayed
  message (on ``<queue>.DQ``) is held unacked until due and then moved to the queue, as the Worker does.
* queue_size / purge -> the broker's keys / ``get_queue_message_counts`` and ``flush``.
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

import dramatiq
import pika
from dramatiq.common import dq_name
from dramatiq.message import generate_unique_id

from funboost.foreign import HeldMessages, join_worker_host, poll_until, seconds_until
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.redact import shown_url
from funboost.plugins.host import ConsumerHost

from funboost_dramatiq.app import config_key, get_broker
from funboost_dramatiq.heartbeat import RedisHeartbeat
from funboost_dramatiq.options import DramatiqOptions
from funboost_dramatiq.worker import DramatiqWorkerHost, envelope_from_dramatiq

_heartbeats: dict[int, RedisHeartbeat] = {}  # one per pulling dramatiq broker (keyed by id)
_heartbeats_lock = threading.Lock()


class DramatiqBroker(Broker):
    kind = "dramatiq"
    capabilities = Capabilities(
        # acked after the run; RabbitMQ redelivers when the connection drops, Redis when the holder's
        # heartbeat (kept alive while the process lives) is older than heartbeat_timeout
        at_least_once=True,
        persistent=True,  # durable queues, persistent messages (Redis: as persistent as the server)
        native_requeue=True,
        dead_letter=True,  # <queue>_dlx is another dramatiq queue
        native_delay=True,  # <queue>.DQ, moved to the queue by the worker when due
        priority=False,  # Redis has none; on RabbitMQ set max_priority (see docs/brokers/dramatiq.md)
        ordering="fifo",
        queue_size="exact",
        in_flight_count=False,  # Redis knows it (QueueSize.in_flight), RabbitMQ does not
        purge=True,
    )
    options_model = DramatiqOptions

    def __init__(self, queue_name: str, options: Optional[DramatiqOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: DramatiqOptions
        self.family = self.options.family()
        self.dbroker: dramatiq.Broker = get_broker(self.options)
        self._lock = threading.Lock()  # the pull path
        self._held: HeldMessages[Delivery] = HeldMessages()  # delayed messages pulled before their eta
        self._pulled: dict[int, Any] = {}  # RabbitMQ: the channel of each unacked basic_get
        self._chan: Any = None
        self._pull_conn: Any = None  # RabbitMQ: the pull path's own connection (see _pull_amqp)
        self._host: Optional[DramatiqWorkerHost] = None

    @property
    def supports_priority(self) -> bool:
        """RabbitMQ queues declared with ``max_priority`` (``x-max-priority``) order by priority, so core must
        keep a message's priority (the kind declares ``priority=False`` for its default, Redis, which has
        none; so does RabbitMQ without ``max_priority``)."""
        return self.family == "amqp" and bool(self.options.max_priority)

    # ------------------------------------------------------------------ availability
    @classmethod
    def check_available(cls, options: DramatiqOptions) -> Optional[str]:
        url = options.resolved_broker_url()
        try:
            if options.family() == "redis":
                import redis
                redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
            else:
                import pika
                params = pika.URLParameters(url.split(";", 1)[0])
                params.socket_timeout = params.blocked_connection_timeout = 3
                pika.BlockingConnection(params).close()
            return None
        except Exception as exc:  # any failure means "not reachable" for the test suites
            return f"dramatiq broker {shown_url(url)} unreachable: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ publish
    def _message(self, m: OutgoingMessage) -> dramatiq.Message:
        opts: dict[str, Any] = {}
        if m.priority is not None and self.options.max_priority and self.family == "amqp":
            opts["broker_priority"] = max(0, min(int(m.priority), self.options.max_priority))
        return dramatiq.Message(queue_name=self.queue_name, actor_name=self.queue_name, args=(m.body,), kwargs={},
                                options=opts, message_id=m.task_id or generate_unique_id())

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        enqueue = self.dbroker.enqueue
        for m in messages:
            delay = None
            if m.eta is not None:
                ms = int(seconds_until(m.eta) * 1000)
                delay = ms if ms > 0 else None
            enqueue(self._message(m), delay=delay)

    # ------------------------------------------------------------------ consume (the real path)
    def run_consumer(self, consumer: ConsumerHost) -> bool:
        options = self.options
        self._host = join_worker_host(("dramatiq", config_key(options)), lambda: DramatiqWorkerHost(options),
                                      consumer)
        return True

    # ------------------------------------------------------------------ direct pull
    def _delivery(self, message: dramatiq.Message, tag: Any, redelivered: bool = False) -> Delivery:
        return Delivery(body=envelope_from_dramatiq(tuple(message.args), dict(message.kwargs), message.message_id),
                        tag=tag, redelivered=redelivered, task_id=message.message_id)

    def _watch(self) -> None:
        """Redis: keep this process's heartbeat alive (and reclaim dead holders) for the pulled queue."""
        if self.family != "redis":
            return
        with _heartbeats_lock:
            hb = _heartbeats.get(id(self.dbroker))
            if hb is None or hb.broker is not self.dbroker:
                hb = _heartbeats[id(self.dbroker)] = RedisHeartbeat(self.dbroker)
        hb.watch(self.queue_name)

    def _pull_redis(self, n: int) -> list[Delivery]:
        b, q, dq = self.dbroker, self.queue_name, dq_name(self.queue_name)
        for data in b.do_fetch(dq, 1000):  # delayed: hold until due (unacked, in our ack set of the .DQ)
            if data is None:  # an id without its message (dramatiq#266): nothing to hold
                continue
            msg = dramatiq.Message.decode(data)
            self._held.hold(msg.options.get("eta", 0) / 1000, self._delivery(msg, (dq, msg)))
        for d in self._held.pop_due():
            _, msg = d.tag
            self._enqueue_due(msg)
            b.do_ack(dq, msg.options["redis_message_id"])
        out = []
        for data in b.do_fetch(q, n):
            if data is None:
                continue
            msg = dramatiq.Message.decode(data)
            out.append(self._delivery(msg, (q, msg)))
        return out

    def _pull_amqp(self, n: int) -> list[Delivery]:
        b, q = self.dbroker, self.queue_name
        b.declare_queue(q, ensure=True)
        if self._chan is None or not self._chan.is_open:
            # a connection of the pull path's own, used only under self._lock: dramatiq's connection is per
            # thread, and a channel made on one thread's connection would share it with that thread's
            # publishes (pika connections are not thread-safe)
            if self._pull_conn is None or not self._pull_conn.is_open:
                params = b.parameters[0] if isinstance(b.parameters, list) else b.parameters
                self._pull_conn = pika.BlockingConnection(params)
            self._chan = self._pull_conn.channel()
        chan = self._chan
        # delayed messages: held unacked until due, then moved (publish to the queue, ack the delayed one)
        while True:
            method, _props, body = chan.basic_get(queue=dq_name(q), auto_ack=False)
            if method is None:
                break
            msg = dramatiq.Message.decode(body)
            self._held.hold(msg.options.get("eta", 0) / 1000, self._delivery(msg, (chan, method.delivery_tag, msg)))
        for d in self._held.pop_due():
            dchan, dtag, msg = d.tag
            self._enqueue_due(msg)
            dchan.basic_ack(dtag)
        out = []
        while len(out) < n:
            method, _props, body = chan.basic_get(queue=q, auto_ack=False)
            if method is None:
                break
            msg = dramatiq.Message.decode(body)
            out.append(self._delivery(msg, (chan, method.delivery_tag, msg), bool(method.redelivered)))
        return out

    def _enqueue_due(self, msg: dramatiq.Message) -> None:
        """A held delayed message fell due: onto its queue without the eta, as dramatiq's worker does (the
        caller then acks it on the delay queue)."""
        due = msg.copy(queue_name=self.queue_name)
        del due.options["eta"]
        self.dbroker.enqueue(due)

    def _pull(self, max_count: int) -> list[Delivery]:
        with self._lock:
            return self._pull_redis(max_count) if self.family == "redis" else self._pull_amqp(max_count)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        self._watch()
        return poll_until(lambda: self._pull(max_count), timeout, held=self._held)

    def _settle(self, deliveries: Sequence[Delivery], verb: str) -> None:
        pulled = [d for d in deliveries if d.tag is not None]
        if not pulled:
            return  # worker-run deliveries: dramatiq's worker acks them after the actor returned
        with self._lock:
            for d in pulled:
                if self.family == "redis":
                    queue, msg = d.tag
                    rid = msg.options["redis_message_id"]
                    (self.dbroker.do_ack if verb == "ack" else self.dbroker.do_requeue)(queue, rid)
                else:
                    chan, tag, _msg = d.tag
                    if verb == "ack":
                        chan.basic_ack(tag)
                    else:
                        chan.basic_nack(tag, requeue=True)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "ack")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "requeue")

    # ------------------------------------------------------------------ size / purge
    def _redis_counts(self) -> tuple[int, int, int]:
        b, ns, q = self.dbroker, self.dbroker.namespace, self.queue_name
        pipe = b.client.pipeline(transaction=False)
        pipe.llen(f"{ns}:{q}")
        pipe.hlen(f"{ns}:{q}.msgs")
        pipe.hlen(f"{ns}:{dq_name(q)}.msgs")
        ready, unacked, delayed = pipe.execute()
        return int(ready), max(0, int(unacked) - int(ready)), int(delayed)

    def queue_size(self) -> QueueSize:
        if self.family == "redis":
            ready, in_flight, delayed = self._redis_counts()
            return QueueSize(ready=ready, in_flight=in_flight, delayed=delayed)
        with self._lock:
            ready, delayed, _dead = self.dbroker.get_queue_message_counts(self.queue_name)
        return QueueSize(ready=int(ready), in_flight=None, delayed=int(delayed))

    def purge(self) -> int:
        """Drop the ready and delayed messages (dramatiq's ``flush``, which also empties ``<queue>.XQ``)."""
        size = self.queue_size()
        with self._lock:
            self._held.clear()
            if self.family == "amqp":
                self.dbroker.declare_queue(self.queue_name, ensure=True)
            self.dbroker.flush(self.queue_name)
        return (size.ready or 0) + (size.delayed or 0)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.remove(self.queue_name)
        with self._lock:
            held = self._held.clear()
            try:
                if self.family == "redis":  # delayed messages held here go back at once
                    ids = [d.tag[1].options["redis_message_id"] for d in held]
                    if ids:
                        self.dbroker.do_requeue(dq_name(self.queue_name), *ids)
                elif self._chan is not None and self._chan.is_open:
                    self._chan.close()  # RabbitMQ requeues what this channel holds unacked
                if self._pull_conn is not None and self._pull_conn.is_open:
                    self._pull_conn.close()
            except Exception:
                pass
            self._chan = None
            self._pull_conn = None
        super().close()


def dramatiq_broker(booster: Any) -> dramatiq.Broker:
    """The dramatiq broker a DRAMATIQ booster publishes through (for dramatiq tooling)."""
    return get_broker(booster.broker_options)


__all__ = ["DramatiqBroker", "dramatiq_broker"]
