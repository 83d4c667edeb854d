"""The ``nameko`` broker kind: funboost functions as ``@rpc`` methods of nameko services on RabbitMQ.

* publish -> the request nameko's ``call_async`` sends: ``{"args": [envelope], "kwargs": {}}`` to the
  ``nameko-rpc`` topic exchange with routing key ``<queue>.<method_name>``, correlation id = the funboost
  task id, through nameko's own ``Publisher`` (publisher confirms, persistent). The queue's rpc queue
  ``rpc-<queue>`` is declared first, as nameko's ``RpcConsumer`` declares it, so requests wait there
  before any service runs. The service's reply goes to a routing key nobody binds (funboost's RPC
  result comes from the state backend); a plain nameko caller gets its reply as usual.
* consume -> :meth:`NamekoBroker.run_consumer` starts the queue's nameko service process
  (:mod:`funboost_nameko.worker`, :mod:`funboost_nameko.service`).
* fetch / ack / requeue -> ``basic_get`` on ``rpc-<queue>`` (tools, ``<queue>_dlx``, the contract suite).
* queue_size / purge -> the rpc queue's message count / ``queue.purge``.
* eta / countdown: nameko has no delay; funboost holds the message until its eta (``native_delay=False``).
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

import kombu
from nameko.amqp.publish import Publisher

from funboost.foreign import join_worker_host, poll_until
from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize
from funboost.plugins.host import ConsumerHost
from funboost.process_local import ProcessLocalDict

from funboost_nameko.options import NamekoOptions
from funboost_nameko.worker import NamekoWorkerHost, envelope_from_call

#: where the replies to funboost's own publishes go: a three-word key, which no nameko binding
#: (``<service>.*`` or a reply queue's one-word uuid) matches, so RabbitMQ drops them
DISCARDED_REPLY_TO = "funboost.reply.discarded"

_declared: ProcessLocalDict[tuple, bool] = ProcessLocalDict()


def rpc_queue(options: NamekoOptions, queue: str) -> kombu.Queue:
    """``rpc-<queue>``, declared exactly as nameko's ``RpcConsumer`` declares it."""
    exchange = kombu.Exchange(options.rpc_exchange, type="topic", durable=True)
    return kombu.Queue(f"rpc-{queue}", exchange=exchange, routing_key=f"{queue}.*", durable=True)


class NamekoBroker(Broker):
    kind = "nameko"
    capabilities = Capabilities(
        # nameko's rpc entrypoint acks a request after the worker finished and the reply was sent; a
        # service process that dies (or whose funboost process dies) drops its connection: RabbitMQ
        # gives the unacked requests to another service
        at_least_once=True,
        persistent=True,  # durable rpc queue, persistent requests
        native_requeue=True,
        dead_letter=True,  # <queue>_dlx is the rpc queue of another service
        native_delay=False,  # nameko has none: funboost holds the message until its eta
        priority=False,  # nameko's rpc queues have no x-max-priority
        ordering="fifo",
        queue_size="exact",
        in_flight_count=False,
        purge=True,
    )
    options_model = NamekoOptions

    def __init__(self, queue_name: str, options: Optional[NamekoOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: NamekoOptions
        self.uri = self.options.resolved_amqp_uri()
        self.queue = rpc_queue(self.options, queue_name)
        self.routing_key = f"{queue_name}.{self.options.method_name}"
        self.publisher = Publisher(self.uri, serializer="json")
        self._lock = threading.Lock()  # the pull path's connection
        self._conn: Optional[kombu.Connection] = None
        self._chan: Any = None
        self._host: Optional[NamekoWorkerHost] = None

    @classmethod
    def check_available(cls, options: NamekoOptions) -> Optional[str]:
        uri = options.resolved_amqp_uri()
        try:
            with kombu.Connection(uri, connect_timeout=3) as conn:
                conn.connect()
            return None
        except Exception as exc:  # any failure means "not reachable" for the test suites
            return f"nameko AMQP {uri} unreachable: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ publish
    def _declare_once(self) -> None:
        _declared.get_or_create((self.uri, self.options.rpc_exchange, self.queue_name), self._declare)

    def _declare(self) -> bool:
        with kombu.Connection(self.uri) as conn:
            self.queue(conn.default_channel).declare()
        return True

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._declare_once()
        for m in messages:
            self.publisher.publish({"args": [m.body], "kwargs": {}}, exchange=self.queue.exchange,
                                   routing_key=self.routing_key, reply_to=DISCARDED_REPLY_TO,
                                   correlation_id=m.task_id)

    # ------------------------------------------------------------------ consume (the real path)
    def run_consumer(self, consumer: ConsumerHost) -> bool:
        options, queue = self.options, self.queue_name
        self._host = join_worker_host(("nameko", self.uri, options.rpc_exchange, queue),
                                      lambda: NamekoWorkerHost(options, queue), consumer)
        return True

    # ------------------------------------------------------------------ direct pull
    def _channel(self) -> Any:
        if self._chan is None:
            self._conn = kombu.Connection(self.uri)
            self._chan = self._conn.channel()
            self.queue(self._chan).declare()
        return self._chan

    def _pull(self, max_count: int) -> list[Delivery]:
        out: list[Delivery] = []
        with self._lock:
            q = self.queue(self._channel())
            while len(out) < max_count:
                msg = q.get(no_ack=False, accept=["json"])
                if msg is None:
                    break
                body = msg.decode()
                if not isinstance(body, dict):
                    body = {}
                out.append(Delivery(
                    body=envelope_from_call(list(body.get("args") or []), dict(body.get("kwargs") or {}),
                                            msg.properties.get("correlation_id")),
                    tag=msg, redelivered=bool(msg.delivery_info.get("redelivered")),
                    task_id=msg.properties.get("correlation_id")))
        return out

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        return poll_until(lambda: self._pull(max_count), timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for d in deliveries:
                if d.tag is not None:
                    d.tag.ack()

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for d in deliveries:
                if d.tag is not None:
                    d.tag.requeue()

    # ------------------------------------------------------------------ size / purge
    def queue_size(self) -> QueueSize:
        with self._lock:
            _name, count, _consumers = self.queue(self._channel()).queue_declare()
        return QueueSize(ready=int(count), in_flight=None, delayed=None)

    def purge(self) -> int:
        with self._lock:
            return int(self.queue(self._channel()).purge() or 0)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            host.remove(self.queue_name)
        with self._lock:
            conn, self._conn, self._chan = self._conn, None, None
            if conn is not None:
                try:
                    conn.release()  # RabbitMQ requeues what this connection holds unacked
                except Exception:
                    pass
        super().close()


__all__ = ["NamekoBroker", "DISCARDED_REPLY_TO", "rpc_queue"]
