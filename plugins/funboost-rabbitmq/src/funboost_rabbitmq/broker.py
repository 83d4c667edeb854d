"""The ``rabbitmq`` broker kind (aliases ``rabbitmq_pika``, ``rabbitmq_amqpstorm``).

Topology for a queue ``Q`` (all durable unless configured otherwise):

* ``Q``: the work queue, declared with ``x-dead-letter-exchange = funboost.dlx`` and
  ``x-dead-letter-routing-key = Q_dlx`` (none with ``dead_letter_exchange=None``) and ``x-max-priority``
  when configured; with ``passive=True`` it is never declared, only checked to exist;
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
import functools
import logging
import math
import os
import re
import threading
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

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

from funboost.process_local import ProcessLocal
from funboost.redact import shown_url

from .connection import (
    CONNECTION_ERRORS,
    Admin,
    PublishError,
    PublishItem,
    Publisher,
    TopologyError,
    WireMessage,
    acquire_publisher,
    backoff_delays,
    connection_parameters,
    describe_error,
    get_admin,
    get_thread_publisher,
    release_publisher,
)
from .subscription import AUTO_PREFETCH_MAX, AUTO_PREFETCH_START, AmqpSubscription
from .frames import FixedProperties
from .options import RabbitmqComplexRoutingOptions, RabbitmqOptions

logger = logging.getLogger("funboost.rabbitmq")

DELAYED_EXCHANGE = "funboost.delayed"
REASON_HEADER = "x-funboost-dead-letter-reason"
CONTENT_TYPE = "application/json"
_plugin_cache: dict[str, bool] = {}  # url -> the server has the delayed-message exchange plugin
T = TypeVar("T")

# This process's live consumers per (url, queue, broadcast). The engine's consumer fetches through a broker
# instance of its own, so queue_size() and purge() of any other instance (booster.queue_size()) look here
# for what this process prefetched or runs. Per process: a forked child has none of its parent's.
_local_lock: ProcessLocal[threading.Lock] = ProcessLocal(threading.Lock)
_local_subscriptions: ProcessLocal[dict[tuple[str, str, bool], list[AmqpSubscription]]] = ProcessLocal(dict)


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
            return f"RabbitMQ at {shown_url(url)} is not reachable: {type(exc).__name__}: {exc!r}"
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
        args: dict[str, Any] = {}
        if o.dead_letter_exchange:  # None: no dead-letter arguments (reject() publishes to Q_dlx itself)
            args["x-dead-letter-exchange"] = o.dead_letter_exchange
            args["x-dead-letter-routing-key"] = dead_letter_to or dead_letter_queue_name(name)
        if self._max_priority:
            args["x-max-priority"] = self._max_priority
        if user_args:
            args.update(o.queue_arguments)
        return args

    def _declare_common(self, ch: Any) -> None:
        o = self.options
        dlq = dead_letter_queue_name(self.queue_name)
        if o.dead_letter_exchange:
            ch.exchange_declare(o.dead_letter_exchange, "direct", durable=True)
        # declared exactly as a broker instance for ``Q_dlx`` declares its own queue (see
        # dead_letter_broker), so that both agree on the arguments. Declared without a dead-letter
        # exchange too: reject() then publishes to it through the default exchange, which drops a message
        # for a queue that does not exist
        _declare_queue(ch, dlq, o.queue_durable, self._queue_args(dlq, user_args=False), main=False)
        if o.dead_letter_exchange:
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
            self._declare_main_queue(ch)
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
            _declare_queue(ch, queue, o.queue_durable, args, main=False)
            self._bind(ch, queue)
            return queue
        self._declare_main_queue(ch)
        self._bind(ch, self.queue_name)
        return self.queue_name

    def _declare_main_queue(self, ch: Any) -> None:
        """Declare ``Q`` with this configuration's arguments, or with ``passive`` only check that it
        exists (its arguments, whatever they are, stay as they are)."""
        o = self.options
        if not o.passive:
            _declare_queue(ch, self.queue_name, o.queue_durable, self._queue_args(self.queue_name))
            return
        try:
            ch.queue_declare(self.queue_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise QueueNotFound(self.queue_name, exc.reply_text) from exc
            raise

    def prepare_consume(self) -> None:
        """Declare the queue's topology now (core calls this in ``consume()``), so that a queue declared
        with other arguments (or missing, with ``passive``) makes ``consume()`` raise its
        :class:`TopologyError` with the ways out. An unreachable server is not an error here: the
        consumer starts and its subscription connects when the server is back."""
        deadline = time.monotonic() + 5.0  # one connect attempt, bounded
        try:
            # the delay-plugin probe uses the admin connection itself: before admin.run, never inside it
            # (its lock is not re-entrant: a consumer's first consume() hung here)
            self._delay_plugin(deadline)
            self._admin().run(self._declare_for_publish, retries=0, deadline=deadline)
        except TopologyError:
            raise
        except pika.exceptions.ChannelClosedByBroker as exc:  # any other refusal: let the subscription tell
            logger.warning("rabbitmq: declaring the queue %r before consuming failed: %s", self.queue_name,
                           describe_error(exc))
        except CONNECTION_ERRORS as exc:
            logger.warning("rabbitmq at %s unreachable when consuming %r starts (%s); the consumer connects "
                           "when it is back", shown_url(self.url), self.queue_name, describe_error(exc))

    def _ensure_declared(self, pub: Publisher, deadline: float) -> None:
        gen = pub.generation
        if self._declared_gen == gen and gen >= 0:
            return

        def declare() -> None:
            self._delay_plugin(deadline)  # probes with the admin connection: not from inside admin.run (lock)
            self._admin().run(self._declare_for_publish, retries=0, deadline=deadline)

        self._until(declare, deadline)
        self._declared_gen = gen

    def _until(self, fn: Callable[[], T], deadline: float) -> T:
        """Run ``fn`` (a publish's declarations), retrying through connection errors (server down or
        restarting) until ``deadline``, as the publish itself does; then raise :class:`PublishError` with
        the address and the reason. A refusal by the server (404, 406...) is raised at once."""
        delays = backoff_delays(self.options.reconnect_max_delay)
        while True:
            try:
                return fn()
            except pika.exceptions.ChannelClosedByBroker:
                raise
            except CONNECTION_ERRORS as exc:
                reason = describe_error(exc)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishError(
                    f"rabbitmq publish to {shown_url(self.url)} failed: no connection within "
                    f"publish_timeout={self.options.publish_timeout}s: cannot connect: {reason}")
            logger.debug("rabbitmq at %s: %s; retrying", shown_url(self.url), reason)
            time.sleep(min(next(delays), left))

    def _delay_plugin(self, deadline: Optional[float] = None) -> bool:
        """Whether delays go through the delayed-message exchange plugin (checked once per URL)."""
        if self._use_plugin is not None:
            return self._use_plugin
        o = self.options
        use = False
        if o.delay_mode != "ttl" and not self._exchange:
            cached = _plugin_cache.get(self.url)
            if cached is None:
                cached = _plugin_cache[self.url] = self._probe_delay_plugin(deadline)
            use = cached
            if o.delay_mode == "plugin" and not use:
                raise RuntimeError("delay_mode='plugin' but the server has no x-delayed-message exchange "
                                   "type (rabbitmq_delayed_message_exchange plugin)")
        self._use_plugin = use
        return use

    def _probe_delay_plugin(self, deadline: Optional[float] = None) -> bool:
        """Whether the server has the delayed-message exchange type. Only the server's answer counts: a
        connection that could not be made raises (the caller retries), so an outage is never cached as
        "no plugin"."""
        def declare(ch: Any) -> None:
            ch.exchange_declare(DELAYED_EXCHANGE, "x-delayed-message", durable=True,
                                arguments={"x-delayed-type": "direct"})
        try:
            self._admin().run(declare, retries=0, deadline=deadline)
            return True
        except pika.exceptions.AMQPChannelError:
            return False
        except pika.exceptions.ConnectionClosedByBroker as exc:
            # an unknown exchange type closes the whole connection (503 COMMAND_INVALID); the admin
            # reopens it
            if exc.reply_code in (503, 530):
                return False
            raise

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
        """Return once RabbitMQ confirmed every message. Retries through connection errors until
        ``publish_timeout`` (one deadline for the declarations and the publish), then raises
        :class:`~funboost_rabbitmq.connection.PublishError` naming the address and the reason."""
        if not messages:
            return
        o = self.options
        deadline = time.monotonic() + o.publish_timeout
        pub = self._ready_publisher(deadline)
        if len(messages) == 1:
            m = messages[0]
            delay_queues: dict[str, int] = {}
            exchange, key, extra = self._route(m, time.time(), delay_queues)
            self._declare_delay_queues(delay_queues, deadline)
            get_thread_publisher(self.url, o.heartbeat, o.reconnect_max_delay).publish_one(
                PublishItem(exchange, key, _body_bytes(m.body), self._properties(m, extra)), o.publish_timeout,
                deadline)
            return
        pub.publish(self._wire(messages, deadline), o.publish_timeout, deadline)

    def publish_begin(self, messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
        """Write the batch now; the returned function waits for its publisher confirms (pipelined mode
        keeps several batches in flight on the shared confirming connection)."""
        if not messages:
            return super().publish_begin(messages)
        deadline = time.monotonic() + self.options.publish_timeout
        pub = self._ready_publisher(deadline)
        return pub.publish_begin(self._wire(messages, deadline), self.options.publish_timeout, deadline)

    def _ready_publisher(self, deadline: float) -> Publisher:
        pub = self._get_publisher()
        if self._declared_gen < 0:
            pub.wait_ready(max(0.0, min(5.0, deadline - time.monotonic())))
        self._ensure_declared(pub, deadline)
        return pub

    def _wire(self, messages: Sequence[OutgoingMessage], deadline: float) -> list[WireMessage]:
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
        self._declare_delay_queues(delay_queues, deadline)
        return wire

    def _declare_delay_queues(self, queues: dict[str, int], deadline: float) -> None:
        """(Re)declare the TTL delay queues a publish needs; re-declaring on every publish also resets
        their x-expires idle timer."""
        if queues:
            self._until(lambda: self._admin().run(lambda ch: self._declare_delay_queues_on(ch, queues),
                                                  retries=0, deadline=deadline), deadline)

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
                                                      max(1, AUTO_PREFETCH_START * max_count))
                    if auto and "x-queue-type" in o.queue_arguments:
                        prefetch = max(prefetch, 100)  # cannot grow later on quorum/stream queues
                    self._subscription = AmqpSubscription(
                        self.url, o.heartbeat, o.reconnect_max_delay,
                        f"funboost-consumer:{self.queue_name}:{os.getpid()}", self._declare_for_consume,
                        prefetch=prefetch, auto_prefetch=auto, no_ack=o.no_ack,
                        channel_qos="x-queue-type" not in o.queue_arguments, queue_name=self.queue_name)
                    with _local_lock.get():
                        _local_subscriptions.get().setdefault(self._local_key, []).append(self._subscription)
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
        (without one, ``dead_letter_exchange=None``: straight to ``Q_dlx``; confirmed), then ack the
        original."""
        if not deliveries:
            return
        deadline = time.monotonic() + self.options.publish_timeout
        pub = self._get_publisher()
        self._ensure_declared(pub, deadline)
        dlq = dead_letter_queue_name(self.queue_name)
        # without a dead-letter exchange, the default exchange routes by queue name: straight to Q_dlx
        exchange = self.options.dead_letter_exchange or ""
        items: list[WireMessage] = [
            (exchange, dlq, annotate_dead_letter(d.body, reason).encode("utf-8"),
             self._wire_props.encode(None, d.task_id or None, {REASON_HEADER: reason[:1000]}))
            for d in deliveries]
        pub.publish(items, self.options.publish_timeout, deadline)
        self.ack(deliveries)

    def dead_letter_target(self) -> tuple[type[Broker], Any]:
        """``Q_dlx`` is a plain work queue, whatever routing ``Q`` uses."""
        return type(self), self.options.model_copy(update={
            "exchange_name": "", "exchange_type": "direct", "routing_key_for_publish": None,
            "routing_key_for_bind": None, "headers_for_bind": {}, "headers_for_publish": {},
            "queue_arguments": {}, "passive": False,  # Q_dlx is funboost's own queue: declared, never passive
            # declared as _declare_common declares it (quorum main queues: no default priority)
            "max_priority": self._max_priority})

    # ------------------------------------------------------------------ sizes, purge, close
    @property
    def _local_key(self) -> tuple[str, str, bool]:
        return (self.url, self.queue_name, self._fanout)

    def _local_consumers(self) -> list[AmqpSubscription]:
        """This process's live consumers of this queue, whichever broker instance started them. A broadcast
        consumer counts only its own queue: the others hold copies of the same messages."""
        if self._fanout and self._subscription is not None:
            return [self._subscription]
        with _local_lock.get():
            return list(_local_subscriptions.get().get(self._local_key, ()))

    def _consumed_queues(self, consumers: Sequence[AmqpSubscription]) -> list[str]:
        if not self._fanout:
            return [self.queue_name]
        return [c.queue for c in consumers if c.queue]  # a broadcast: each consumer's own queue

    def _server_counts(self, queues: Sequence[str], purge: bool) -> int:
        """Ready messages on the server (purged first if ``purge``); a queue not declared yet has none."""
        def count(ch: Any, queue: str) -> int:
            try:
                ok = ch.queue_purge(queue) if purge else ch.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                return 0  # (the admin reopens the channel the 404 closed on its next use)
            return int(ok.method.message_count)
        admin = self._admin()
        total = 0
        for queue in queues:
            total += admin.run(functools.partial(count, queue=queue))
        return total

    def queue_size(self) -> QueueSize:
        """``ready``: the server's count plus what this process's consumers prefetched and did not hand to
        the engine; ``in_flight``: what they handed to the engine and did not ack (None without a consumer
        in this process: other processes' share is not known over AMQP); ``delayed``: unknown."""
        consumers = self._local_consumers()
        queues = self._consumed_queues(consumers)
        if not queues:
            return QueueSize(ready=None)  # a broadcast without a consumer here: no queue to count
        ready = self._server_counts(queues, purge=False)
        in_flight: Optional[int] = None
        for consumer in consumers:
            # prefetched but not yet handed to the engine counts as ready, not in flight
            ready += consumer.buffered()
            n = consumer.in_flight()
            if n is not None:
                in_flight = (in_flight or 0) + n
        return QueueSize(ready=ready, in_flight=in_flight, delayed=None)

    def purge(self) -> int:
        """Drop the ready messages: the server's and this process's prefetched ones (as counted by
        ``queue_size().ready``)."""
        consumers = self._local_consumers()
        n = self._server_counts(self._consumed_queues(consumers), purge=True)
        for consumer in consumers:
            n += consumer.drop_buffered()
        return n

    def close(self) -> None:
        with self._lock:
            self._closed = True
            consumer, self._subscription = self._subscription, None
            pub, self._publisher = self._publisher, None
        if consumer is not None:
            with _local_lock.get():
                registered = _local_subscriptions.get().get(self._local_key, [])
                if consumer in registered:
                    registered.remove(consumer)
                if not registered:
                    _local_subscriptions.get().pop(self._local_key, None)
            consumer.stop()
        if pub is not None and self._pid == os.getpid():
            release_publisher(pub)
        super().close()

    def delete_queues(self) -> None:
        """Delete ``Q``, ``Q_dlx`` and ``Q_dlx_dlx`` (tests and tooling; delay queues and broadcast
        queues expire by themselves)."""
        delete_queues(self.url, self.options.heartbeat, self.queue_name)


_ARGUMENT_OPTIONS = {  # queue argument -> the option that declares it (and how to declare none)
    "x-max-priority": "max_priority (none: {'max_priority': 0})",
    "x-dead-letter-exchange": "dead_letter_exchange (none: {'dead_letter_exchange': None})",
    "x-dead-letter-routing-key": "dead_letter_exchange (none: {'dead_letter_exchange': None})",
}


class QueueArgumentsMismatch(TopologyError):
    """RabbitMQ refused to declare a queue that already exists with other arguments (406). The message
    names the argument the server complained about and every way out."""

    def __init__(self, queue: str, arguments: dict, server_text: str, main: bool = True) -> None:
        super().__init__(406, server_text)
        self.queue = queue
        self.arguments = arguments
        m = re.search(r"inequivalent arg '([^']+)'", server_text)
        self.argument: Optional[str] = m.group(1) if m else None
        arg = self.argument
        option = _ARGUMENT_OPTIONS.get(arg or "", "queue_arguments")
        text = (f"RabbitMQ queue {queue!r} already exists with other arguments than this configuration "
                f"declares ({arguments}); the server said: {server_text}. ")
        if main:
            text += (f"Ways out: (1) use the queue as it is, never declaring its arguments: "
                     f"broker_exclusive_config={{'passive': True}}; (2) declare exactly the arguments it has: "
                     f"for {arg!r}, option {option}; the server names one difference at a time, so check the "
                     f"others too: max_priority for x-max-priority (none: {{'max_priority': 0}}), "
                     f"dead_letter_exchange for x-dead-letter-* (none: {{'dead_letter_exchange': None}}), "
                     f"queue_arguments for any other x- argument; (3) ")
        else:
            text += (f"It is funboost's own queue: configure {option} as when it was declared, "
                     f"or ")
        self.message = text + "delete the queue (its messages are lost) so that it is declared anew."

    def __str__(self) -> str:
        return self.message


class QueueNotFound(TopologyError):
    """``passive=True`` and the queue does not exist (404)."""

    def __init__(self, queue: str, server_text: str) -> None:
        super().__init__(404, server_text)
        self.queue = queue
        self.message = (f"RabbitMQ queue {queue!r} does not exist (the server said: {server_text}); with "
                        f"broker_exclusive_config={{'passive': True}} funboost uses an existing queue as it is and "
                        f"never creates it: create the queue first, or drop 'passive' so that funboost declares it.")

    def __str__(self) -> str:
        return self.message


def _declare_queue(ch: Any, queue: str, durable: bool, arguments: dict, main: bool = True) -> None:
    try:
        ch.queue_declare(queue, durable=durable, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406 and "inequivalent arg" in str(exc.reply_text):
            raise QueueArgumentsMismatch(queue, arguments, exc.reply_text, main) from exc
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

