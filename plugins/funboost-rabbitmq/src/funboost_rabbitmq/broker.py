"""The ``rabbitmq`` broker kind (aliases ``rabbitmq_pika``, ``rabbitmq_amqpstorm``).

Topology for a queue ``Q`` (all durable unless configured otherwise):

* ``Q``: the work queue, declared with ``x-dead-letter-exchange = funboost.dlx`` and
  ``x-dead-letter-routing-key = Q_dlx`` (and ``x-max-priority`` when configured);
* ``funboost.dlx`` (direct exchange) -> ``Q_dlx``: dead letters, ours (reject) and RabbitMQ's own
  (expired, over length);
* delays: ``Q.delay.<ms>`` queues whose queue-level TTL is ``<ms>`` and that dead-letter back into ``Q``
  (each holds one delay only, so a long delay never blocks a shorter one behind it), or the
  ``x-delayed-message`` exchange ``funboost.delayed`` when the server has that plugin;
* with ``exchange_type`` = direct/topic/headers: ``Q`` is bound to the exchange; with fanout every
  consumer gets its own queue ``Q.bcast.<consumer>`` bound to the exchange (broadcast).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import time
from typing import Any, Callable, Optional, Sequence

import pika
import pika.exceptions

from funboost.plugins.broker import (
    Broker,
    Capabilities,
    Delivery,
    OutgoingMessage,
    QueueSize,
    annotate_dead_letter,
    dead_letter_queue_name,
)

from .connection import (
    Admin,
    PublishItem,
    Publisher,
    WireMessage,
    acquire_publisher,
    connection_parameters,
    get_admin,
    get_thread_publisher,
    release_publisher,
    safe_url,
)
from .subscription import AUTO_PREFETCH_FACTOR, AUTO_PREFETCH_MAX, AmqpSubscription
from .frames import FixedProperties
from .options import RabbitmqComplexRoutingOptions, RabbitmqOptions

logger = logging.getLogger("funboost.rabbitmq")

DELAYED_EXCHANGE = "funboost.delayed"
REASON_HEADER = "x-funboost-dead-letter-reason"
CONTENT_TYPE = "application/json"
_plugin_cache: dict[str, bool] = {}  # url -> the server has the delayed-message exchange plugin


class _ProbeNoiseFilter(logging.Filter):
    """The delayed-message probe expects the server to refuse an unknown exchange type; pika logs
    that expected refusal as an error, which would only alarm users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "x-delayed-message" not in record.getMessage()


logging.getLogger("pika.adapters.blocking_connection").addFilter(_ProbeNoiseFilter())


def delay_bucket_ms(delay_ms: int) -> int:
    """Round a delay *up* to a bucket so the number of delay queues stays small: 10 ms steps below 1 s,
    then 64 steps per doubling (at most ~1.6 % late, never early)."""
    if delay_ms <= 1000:
        return max(10, int(math.ceil(delay_ms / 10.0)) * 10)
    step = 2 ** (int(math.log2(delay_ms)) - 6)
    return int(math.ceil(delay_ms / step)) * step


class RabbitmqBroker(Broker):
    kind = "rabbitmq"
    aliases = ("rabbitmq_pika", "rabbitmq_amqpstorm")
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=True, ordering="fifo", queue_size="exact", in_flight_count=False, purge=True,
        broadcast=False, request_response=False, cross_process=True, max_priority=255,
        pipelined_publish=True)
    options_model = RabbitmqOptions

    def __init__(self, queue_name: str, options: Optional[RabbitmqOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: RabbitmqOptions
        self.url = self.options.resolved_url()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._publisher: Optional[Publisher] = None
        self._declared_gen = -1  # publisher generation for which the topology was declared
        self._subscription: Optional[AmqpSubscription] = None
        self._use_plugin: Optional[bool] = None
        o = self.options
        self._exchange = o.exchange_for(queue_name)
        self._publish_key = o.publish_key(queue_name)
        self._fanout = o.exchange_type == "fanout"
        self._max_priority = o.effective_max_priority()
        self._wire_props = FixedProperties(CONTENT_TYPE, 2 if o.queue_durable else 1)
        self._closed = False

    # ------------------------------------------------------------------ availability
    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        opts = options if isinstance(options, RabbitmqOptions) else cls.options_model()
        url = opts.resolved_url()
        params = connection_parameters(url, opts.heartbeat, "funboost-check")
        params.connection_attempts = 1
        params.socket_timeout = 3
        params.stack_timeout = 5
        try:
            conn = pika.BlockingConnection(params)
        except Exception as exc:
            return f"RabbitMQ at {safe_url(url)} is not reachable: {type(exc).__name__}: {exc!r}"
        try:
            conn.close()
        except Exception:
            pass
        return None

    # ------------------------------------------------------------------ connections
    def _admin(self) -> Admin:
        return get_admin(self.url, self.options.heartbeat)

    def _get_publisher(self) -> Publisher:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._pid, self._publisher, self._subscription, self._declared_gen = os.getpid(), None, None, -1
        pub = self._publisher
        if pub is None:
            with self._lock:
                if self._publisher is None:
                    o = self.options
                    self._publisher = acquire_publisher(self.url, o.heartbeat, o.reconnect_max_delay)
                pub = self._publisher
        return pub

    # ------------------------------------------------------------------ topology
    def _queue_args(self, name: str, dead_letter_to: Optional[str] = None, user_args: bool = True) -> dict:
        o = self.options
        args: dict[str, Any] = {
            "x-dead-letter-exchange": o.dead_letter_exchange,
            "x-dead-letter-routing-key": dead_letter_to or dead_letter_queue_name(name),
        }
        if self._max_priority:
            args["x-max-priority"] = self._max_priority
        if user_args:
            args.update(o.queue_arguments)
        return args

    def _declare_common(self, ch: Any) -> None:
        o = self.options
        dlq = dead_letter_queue_name(self.queue_name)
        ch.exchange_declare(o.dead_letter_exchange, "direct", durable=True)
        # declared exactly as a broker instance for ``Q_dlx`` declares its own queue (see
        # dead_letter_broker), so that both agree on the arguments
        _declare_queue(ch, dlq, o.queue_durable, self._queue_args(dlq, user_args=False))
        ch.queue_bind(dlq, o.dead_letter_exchange, routing_key=dlq)
        if self._exchange:
            ch.exchange_declare(self._exchange, o.exchange_type, durable=o.exchange_durable)

    def _bind(self, ch: Any, queue: str) -> None:
        o = self.options
        if not self._exchange:
            return
        arguments = None
        if o.exchange_type == "headers":
            arguments = {"x-match": o.x_match_for_bind, **o.headers_for_bind}
        for key in o.bind_keys(self.queue_name):
            ch.queue_bind(queue, self._exchange, routing_key=key, arguments=arguments)

    def _declare_for_publish(self, ch: Any) -> None:
        self._declare_common(ch)
        if not self._fanout:  # a broadcast has no shared queue: each consumer declares its own
            _declare_queue(ch, self.queue_name, self.options.queue_durable, self._queue_args(self.queue_name))
            self._bind(ch, self.queue_name)
        if self._delay_plugin():
            ch.queue_bind(self.queue_name, DELAYED_EXCHANGE, routing_key=self.queue_name)

    def _declare_for_consume(self, ch: Any) -> str:
        """Runs on the consumer's I/O thread (its own channel); returns the queue to consume."""
        o = self.options
        self._declare_common(ch)
        if self._fanout:
            suffix = re.sub(r"[^A-Za-z0-9_.-]", "_", self.consumer_id)
            queue = f"{self.queue_name}.bcast.{suffix}"
            args = self._queue_args(queue, dead_letter_to=dead_letter_queue_name(self.queue_name))
            args["x-expires"] = o.broadcast_queue_expires
            _declare_queue(ch, queue, o.queue_durable, args)
            self._bind(ch, queue)
            return queue
        _declare_queue(ch, self.queue_name, o.queue_durable, self._queue_args(self.queue_name))
        self._bind(ch, self.queue_name)
        return self.queue_name

    def _ensure_declared(self, pub: Publisher) -> None:
        gen = pub.generation
        if self._declared_gen == gen and gen >= 0:
            return
        self._delay_plugin()  # probes with the admin connection: not from inside admin.run (lock)
        self._admin().run(self._declare_for_publish)
        self._declared_gen = gen

    def _delay_plugin(self) -> bool:
        """Whether delays go through the delayed-message exchange plugin (checked once per URL)."""
        if self._use_plugin is not None:
            return self._use_plugin
        o = self.options
        use = False
        if o.delay_mode != "ttl" and not self._exchange:
            cached = _plugin_cache.get(self.url)
            if cached is None:
                cached = _plugin_cache[self.url] = self._probe_delay_plugin()
            use = cached
            if o.delay_mode == "plugin" and not use:
                raise RuntimeError("delay_mode='plugin' but the server has no x-delayed-message exchange "
                                   "type (rabbitmq_delayed_message_exchange plugin)")
        self._use_plugin = use
        return use

    def _probe_delay_plugin(self) -> bool:
        def declare(ch: Any) -> None:
            ch.exchange_declare(DELAYED_EXCHANGE, "x-delayed-message", durable=True,
                                arguments={"x-delayed-type": "direct"})
        try:
            # an unknown exchange type closes the whole connection (503); the admin reopens it
            self._admin().run(declare, retries=0)
            return True
        except (pika.exceptions.AMQPChannelError, pika.exceptions.AMQPConnectionError):
            return False

    # ------------------------------------------------------------------ publish
    def _headers(self, m: OutgoingMessage, extra_headers: Optional[dict]) -> Optional[dict]:
        publish_headers = self.options.headers_for_publish
        if publish_headers or m.headers or extra_headers:
            return {**publish_headers, **(m.headers or {}), **(extra_headers or {})}
        return None

    def _priority(self, m: OutgoingMessage) -> Optional[int]:
        max_priority = self._max_priority
        if m.priority is not None and max_priority:
            return min(max(int(m.priority), 0), max_priority)
        return None

    def _properties(self, m: OutgoingMessage, extra_headers: Optional[dict] = None) -> pika.BasicProperties:
        """pika properties, for the one-by-one path (pika's BlockingChannel does the encoding)."""
        return pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=2 if self.options.queue_durable else 1,
            priority=self._priority(m), message_id=m.task_id or None, headers=self._headers(m, extra_headers))

    def _route(self, m: OutgoingMessage, now: float,
               delay_queues: dict[str, int]) -> tuple[str, str, Optional[dict]]:
        """(exchange, routing key, extra headers) of a message; records the TTL delay queue it needs."""
        delay_ms = int(math.ceil((m.eta - now) * 1000)) if m.eta is not None else 0
        if delay_ms <= 0:
            # a topic/direct exchange may route by the message's own key
            key = m.key if (m.key and self._exchange and not self._fanout) else self._publish_key
            return self._exchange, key, None
        if self._delay_plugin():
            return DELAYED_EXCHANGE, self.queue_name, {"x-delay": delay_ms}
        bucket = delay_bucket_ms(delay_ms)
        dq = f"{self.queue_name}.delay.{bucket}"
        delay_queues[dq] = bucket
        return "", dq, None

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        pub = self._ready_publisher()
        o = self.options
        if len(messages) == 1:
            m = messages[0]
            delay_queues: dict[str, int] = {}
            exchange, key, extra = self._route(m, time.time(), delay_queues)
            self._declare_delay_queues(delay_queues)
            get_thread_publisher(self.url, o.heartbeat, o.reconnect_max_delay).publish_one(
                PublishItem(exchange, key, _body_bytes(m.body), self._properties(m, extra)), o.publish_timeout)
            return
        pub.publish(self._wire(messages), o.publish_timeout)

    def publish_begin(self, messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
        """Write the batch now; the returned function waits for its publisher confirms (pipelined mode
        keeps several batches in flight on the shared confirming connection)."""
        if not messages:
            return super().publish_begin(messages)
        pub = self._ready_publisher()
        return pub.publish_begin(self._wire(messages), self.options.publish_timeout)

    def _ready_publisher(self) -> Publisher:
        pub = self._get_publisher()
        if self._declared_gen < 0:
            pub.wait_ready(min(5.0, self.options.publish_timeout))
        self._ensure_declared(pub)
        return pub

    def _wire(self, messages: Sequence[OutgoingMessage]) -> list[WireMessage]:
        """The batch path's form: (exchange, key, body, encoded properties) tuples, no pika objects
        (see frames.py); declares the TTL delay queues the batch needs."""
        now = time.time()
        delay_queues: dict[str, int] = {}
        wire: list[WireMessage] = []
        append = wire.append
        props = self._wire_props
        plain = not self.options.headers_for_publish  # common case: only message_id varies
        for m in messages:
            body = m.body
            body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            if m.eta is None and m.priority is None and plain and not m.headers and not (m.key and self._exchange):
                append((self._exchange, self._publish_key, body, props.encode(None, m.task_id or None)))
                continue
            exchange, key, extra = self._route(m, now, delay_queues)
            append((exchange, key, body,
                    props.encode(self._priority(m), m.task_id or None, self._headers(m, extra))))
        self._declare_delay_queues(delay_queues)
        return wire

    def _declare_delay_queues(self, queues: dict[str, int]) -> None:
        """(Re)declare the TTL delay queues a publish needs; re-declaring on every publish also resets
        their x-expires idle timer."""
        if queues:
            self._admin().run(lambda ch: self._declare_delay_queues_on(ch, queues))

    def _declare_delay_queues_on(self, ch: Any, queues: dict[str, int]) -> None:
        for name, ttl in queues.items():
            ch.queue_declare(name, durable=self.options.queue_durable, arguments={
                "x-message-ttl": ttl,
                "x-expires": ttl + 60_000,
                "x-dead-letter-exchange": self._exchange,
                "x-dead-letter-routing-key": self._publish_key,
            })

    # ------------------------------------------------------------------ consume
    def _get_subscription(self, max_count: int) -> AmqpSubscription:
        consumer = self._subscription
        if consumer is None or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid, self._publisher, self._subscription, self._declared_gen = os.getpid(), None, None, -1
                if self._subscription is None:
                    if self._closed:
                        raise RuntimeError(f"rabbitmq broker for {self.queue_name!r} is closed")
                    o = self.options
                    auto = o.prefetch_count is None
                    prefetch = o.prefetch_count or min(AUTO_PREFETCH_MAX,
                                                      max(1, AUTO_PREFETCH_FACTOR * max_count))
                    if auto and "x-queue-type" in o.queue_arguments:
                        prefetch = max(prefetch, 100)  # cannot grow later on quorum/stream queues
                    self._subscription = AmqpSubscription(
                        self.url, o.heartbeat, o.reconnect_max_delay,
                        f"funboost-consumer:{self.queue_name}:{os.getpid()}", self._declare_for_consume,
                        prefetch=prefetch, auto_prefetch=auto, no_ack=o.no_ack,
                        channel_qos="x-queue-type" not in o.queue_arguments)
                consumer = self._subscription
        return consumer

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        max_count = max(1, max_count)
        consumer = self._get_subscription(max_count)
        consumer.wanted(max_count)
        return consumer.fetch(max_count, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self._subscription is not None:
            self._subscription.settle(deliveries, ack=True)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        if self.options.no_ack:  # already gone from the broker: put a copy back
            self.publish([OutgoingMessage(body=_text(d.body), task_id=d.task_id) for d in deliveries])
            return
        if self._subscription is not None:
            self._subscription.settle(deliveries, ack=False)

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Publish each body, annotated with the reason, through the dead-letter exchange to ``Q_dlx``
        (confirmed), then ack the original."""
        if not deliveries:
            return
        pub = self._get_publisher()
        self._ensure_declared(pub)
        dlq = dead_letter_queue_name(self.queue_name)
        exchange = self.options.dead_letter_exchange
        items: list[WireMessage] = [
            (exchange, dlq, annotate_dead_letter(d.body, reason).encode("utf-8"),
             self._wire_props.encode(None, d.task_id or None, {REASON_HEADER: reason[:1000]}))
            for d in deliveries]
        pub.publish(items, self.options.publish_timeout)
        self.ack(deliveries)

    def dead_letter_target(self) -> tuple[type[Broker], Any]:
        """``Q_dlx`` is a plain work queue, whatever routing ``Q`` uses."""
        return type(self), self.options.model_copy(update={
            "exchange_name": "", "exchange_type": "direct", "routing_key_for_publish": None,
            "routing_key_for_bind": None, "headers_for_bind": {}, "headers_for_publish": {},
            "queue_arguments": {},
            # declared as _declare_common declares it (quorum main queues: no default priority)
            "max_priority": self._max_priority})

    # ------------------------------------------------------------------ sizes, purge, close
    def _consumed_queue(self) -> Optional[str]:
        if not self._fanout:
            return self.queue_name
        return self._subscription.queue if self._subscription is not None else None

    def queue_size(self) -> QueueSize:
        queue = self._consumed_queue()
        if queue is None:
            return QueueSize(ready=None)
        try:
            ok = self._admin().run(lambda ch: ch.queue_declare(queue, passive=True))
            ready: int = ok.method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            ready = 0  # not declared yet: nothing in it
        in_flight = None
        consumer = self._subscription
        if consumer is not None:
            # prefetched but not yet handed to the engine counts as ready, not in flight
            ready += consumer.buffered()
            in_flight = consumer.in_flight()
        return QueueSize(ready=ready, in_flight=in_flight, delayed=None)

    def purge(self) -> int:
        queue = self._consumed_queue()
        if queue is None:
            return 0
        try:
            ok = self._admin().run(lambda ch: ch.queue_purge(queue))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return 0
        n = int(ok.method.message_count)
        if self._subscription is not None:
            n += self._subscription.drop_buffered()
        return n

    def close(self) -> None:
        with self._lock:
            self._closed = True
            consumer, self._subscription = self._subscription, None
            pub, self._publisher = self._publisher, None
        if consumer is not None:
            consumer.stop()
        if pub is not None and self._pid == os.getpid():
            release_publisher(pub)
        super().close()

    def delete_queues(self) -> None:
        """Delete ``Q``, ``Q_dlx`` and ``Q_dlx_dlx`` (tests and tooling; delay queues and broadcast
        queues expire by themselves)."""
        delete_queues(self.url, self.options.heartbeat, self.queue_name)


class QueueArgumentsMismatch(pika.exceptions.ChannelClosedByBroker):
    """RabbitMQ refused to declare a queue that already exists with other arguments (406)."""

    def __init__(self, queue: str, arguments: dict, server_text: str) -> None:
        super().__init__(406, server_text)
        self.queue = queue
        self.message = (
            f"RabbitMQ queue {queue!r} already exists with other arguments than this configuration declares "
            f"({arguments}); the server said: {server_text}. Queues are declared with "
            f"x-max-priority={arguments.get('x-max-priority', 'none')} (option max_priority, default 10). "
            f"Either configure the arguments the queue has (a queue created without priorities: "
            f"broker_exclusive_config={{'max_priority': 0}}), or delete the queue (its messages are lost) "
            f"so that it is declared anew.")

    def __str__(self) -> str:
        return self.message


def _declare_queue(ch: Any, queue: str, durable: bool, arguments: dict) -> None:
    try:
        ch.queue_declare(queue, durable=durable, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406 and "inequivalent arg" in str(exc.reply_text):
            raise QueueArgumentsMismatch(queue, arguments, exc.reply_text) from exc
        raise


def delete_queues(url: str, heartbeat: int, queue_name: str) -> None:
    dlq = dead_letter_queue_name(queue_name)
    names = [queue_name, dlq, dead_letter_queue_name(dlq)]
    get_admin(url, heartbeat).run(lambda ch: [ch.queue_delete(n) for n in names])


def _body_bytes(body: Any) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _text(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body).decode("utf-8")
    return body if isinstance(body, str) else str(body)


class RabbitmqComplexRoutingBroker(RabbitmqBroker):
    """``rabbitmq_complex_routing`` (the original's ``RABBITMQ_COMPLEX_ROUTING``): direct / topic / fanout /
    headers exchanges with binding keys per queue (``routing_key_for_bind``, ``headers_for_bind``) and routing
    keys / headers per publish (``routing_key_for_publish`` / ``headers_for_publish`` in the options, or per
    message: ``TaskOptions(key=...)`` or the original's ``TaskOptions(other_extra_params={
    'routing_key_for_publish': ..., 'headers_for_publish': {...}})``).

    Unlike the ``rabbitmq`` kind's fanout (a copy for every consumer), a fanout exchange here gives a copy
    to every *queue* bound to it, and the consumers of one queue share that copy's messages. Consumers
    declare and bind their queue; publishers to an exchange declare only the exchange (unless
    ``declare_queue_on_publish``), so a message routed to no bound queue is dropped by RabbitMQ, as in AMQP."""

    kind = "rabbitmq_complex_routing"
    aliases = ()
    # by default its queues have no x-max-priority (as the original's), so priorities are not honoured
    capabilities = dataclasses.replace(RabbitmqBroker.capabilities, priority=False, max_priority=0)
    options_model = RabbitmqComplexRoutingOptions

    def __init__(self, queue_name: str, options: Optional[RabbitmqComplexRoutingOptions] = None) -> None:
        super().__init__(queue_name, options)
        self._fanout = False  # a fanout exchange feeds the bound queue Q itself (no per-consumer queues)

    def _declare_for_publish(self, ch: Any) -> None:
        o = self.options
        declare_queue = o.declare_queue_on_publish if o.declare_queue_on_publish is not None else not self._exchange
        if declare_queue:
            super()._declare_for_publish(ch)
            return
        self._declare_common(ch)  # the exchange (and the dead-letter plumbing of Q)

