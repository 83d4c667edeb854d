"""The ``kafka`` broker kind (kafka-python >= 3): one topic per queue, one consumer group per queue.

Delivery is at-least-once. Auto-commit is off; the engine finishes tasks out of order, so each
partition commits only the offset below which every fetched record has finished
(:class:`~funboost_kafka.offsets.PartitionTracker`). ``KafkaConsumer`` is not thread-safe: only the
thread that calls :meth:`KafkaBroker.fetch` (and ``close``/``purge``, under the same lock) touches it;
``ack`` from the engine's ack thread marks offsets finished and commits them if the consumer is free,
else the next ``fetch`` does. A fetch polls up to ``max_poll_records`` at once and keeps what the engine
has no room for; such records are tracked (and so committable) only once handed out.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Optional, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.consumer.subscription_state import ConsumerRebalanceListener

try:  # kafka-python 3.0.12+: the coordinator awaits a listener's coroutines before it sends JoinGroup
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener as _AsyncListener
except ImportError:
    _AsyncListener = None  # type: ignore[assignment,misc]
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

try:
    from kafka.structs import MemberState as _MemberState
    _MEMBER_STABLE: Optional[str] = _MemberState.STABLE
except ImportError:  # older kafka-python 3: KafkaBroker._join_pending falls back to the assignment
    _MEMBER_STABLE = None

from funboost.plugins.broker import (
    Broker, Capabilities, Delivery, OutgoingMessage, QueueSize, dead_letter_queue_name,
)
from funboost.exceptions import FunboostError, MessagesRefused
from funboost.logs import ThrottledLog
from funboost.process_local import ProcessLocal, ProcessLocalDict, fork_generation

from .offsets import PartitionTracker
from .options import KafkaOptions

log = logging.getLogger("funboost.kafka")

TASK_ID_HEADER = "task_id"


class KafkaPublishError(FunboostError):
    """A publish the Kafka broker did not acknowledge in time (the message may or may not be stored)."""


def _commit_meta(offset: int) -> OffsetAndMetadata:
    # leader_epoch -1 = unknown (kafka-python 3 rejects None when encoding the commit request)
    return OffsetAndMetadata(offset, "", -1)


# errors that mean the broker no longer knows this idempotent producer's id (a broker restarted without its
# producer state, e.g. the in-memory test broker): kafka-python retries them with the same id until the
# publish times out, so the publish moves its messages to a new producer instead
_LOST_PRODUCER_ID_ERRORS = frozenset({"UnknownProducerIdError", "OutOfOrderSequenceNumberError"})


def _watch_producer_id(producer: KafkaProducer) -> KafkaProducer:
    """Mark ``producer._funboost_stranded`` when its sender gets one of :data:`_LOST_PRODUCER_ID_ERRORS`.
    Hooks kafka-python's private ``Sender._dispatch_error`` where it exists (3.x); elsewhere nothing is
    marked and a stuck publish ends at ``publish_timeout`` as before."""
    producer._funboost_stranded = False  # type: ignore[attr-defined]
    sender = getattr(producer, "_sender", None)
    dispatch = getattr(sender, "_dispatch_error", None)
    if dispatch is not None:
        def dispatch_error(batch: Any, exception: Any, partition_response: Any) -> Any:
            name = exception.__name__ if isinstance(exception, type) else type(exception).__name__
            if name in _LOST_PRODUCER_ID_ERRORS:
                producer._funboost_stranded = True  # type: ignore[attr-defined]
            return dispatch(batch, exception, partition_response)
        sender._dispatch_error = dispatch_error
    return producer


def _track_topic(producer: KafkaProducer, topic: str) -> None:
    """Have ``producer``'s metadata refreshes ask for ``topic`` from now on (once per producer and topic).

    kafka-python 3 adds a topic to the set its metadata refreshes ask for only when its first ``send`` finds
    no metadata for it. A broker that answers the producer's first request (for no topic) with every topic
    of the cluster (Tansu, the project's test broker, does) leaves the topics that existed then untracked:
    the next refresh, asked for other topics only, drops them, and the sender thread, which sees partitions
    without a known leader in its batch table, asks for a refresh and polls again without waiting, at 100 %
    of a core, until that topic is sent to again. Found through the contract suite (the producer thread of
    a publisher of two queues used a core for the rest of the run)."""
    tracked = producer.__dict__.setdefault("_funboost_tracked_topics", set())
    if topic in tracked:
        return
    add_topic = getattr(getattr(producer, "_sender", None), "add_topic", None)  # thread-safe: it queues the topic
    if add_topic is not None:
        add_topic(topic)
    tracked.add(topic)


def _apply_topic_auto_creation(client: Any, kwargs: dict[str, Any]) -> Any:
    """Make ``client``'s metadata requests honour ``kwargs['allow_auto_create_topics']``. kafka-python 3.0
    accepts that option but its connection manager builds the cluster metadata without it, so every
    metadata request asked the broker to create the topics it names (with the broker's default partition
    count). Set it where the metadata requests read it: the producer's ``_metadata``, the consumer's
    ``_client.cluster``."""
    allow = kwargs.get("allow_auto_create_topics", True)
    for metadata in (getattr(client, "_metadata", None), getattr(getattr(client, "_client", None), "cluster", None)):
        config = getattr(metadata, "config", None)
        if isinstance(config, dict) and "allow_auto_create_topics" in config:
            config["allow_auto_create_topics"] = allow
    return client


def _bootstrap_ms(seconds: Optional[float]) -> dict[str, int]:
    """kafka-python's ``bootstrap_timeout_ms`` for a client built with ``seconds`` left (None: its default,
    30 s). Producers and admin clients bootstrap in their constructor: with the cluster unreachable that is
    where a publish waited out 30 s whatever its ``publish_timeout``."""
    return {} if seconds is None else {"bootstrap_timeout_ms": max(1, int(seconds * 1000))}


def _new_admin(kw: dict[str, Any]) -> KafkaAdminClient:
    """``KafkaAdminClient(**kw)``, without leaking a thread when it fails: kafka-python 3 starts the admin's
    I/O thread before its bootstrap, and a failed bootstrap left that thread running for good (one more per
    failed publish while the cluster is down)."""
    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**kw)  # type: ignore[misc]
    except BaseException:
        for part, method in (("_client", "close"), ("_net", "stop"), ("_metrics", "close")):
            obj = getattr(admin, part, None)
            if obj is not None:
                try:
                    getattr(obj, method)()
                except Exception:  # best effort: the constructor's error is the one to report
                    pass
        raise
    return admin


class _ProducerStranded(Exception):
    """Internal: the producer of a pending publish cannot deliver it on its own: the broker forgot the
    producer's id, or the topic is gone from the cluster (a broker back without its state)."""


class _Shared:
    """Process-wide producers and admin clients, one per connection setting (both are thread-safe,
    and a process with many queues should not open a connection set per queue). Per process, so a
    forked child never reuses its parent's sockets."""

    def __init__(self) -> None:
        self.producers: ProcessLocalDict[tuple, KafkaProducer] = ProcessLocalDict()
        self.admins: ProcessLocalDict[tuple, tuple[KafkaAdminClient, threading.Lock]] = ProcessLocalDict()
        self.topics: set[tuple] = set()  # (connection key, topic) known to exist

    @staticmethod
    def producer_key(opts: KafkaOptions) -> tuple:
        return (opts.connection_key(), opts.acks, opts.compression_type, opts.linger_ms, opts.publish_timeout,
                tuple(sorted(opts.producer_config.items())))

    def producer(self, opts: KafkaOptions, bootstrap_timeout: Optional[float] = None) -> KafkaProducer:
        """The shared producer; a new one bootstraps for ``bootstrap_timeout`` s (default: publish_timeout)."""
        key = self.producer_key(opts)

        def build() -> KafkaProducer:
            # max_block_ms: how long send() waits for the topic's metadata or for buffer space (kafka-python's
            # default, 60 s, outlasted publish_timeout)
            kw = dict(opts.client_kwargs(), acks=opts.acks, linger_ms=opts.linger_ms,
                      compression_type=opts.compression_type, max_block_ms=int(opts.publish_timeout * 1000),
                      **_bootstrap_ms(opts.publish_timeout if bootstrap_timeout is None else bootstrap_timeout))
            kw.update(opts.producer_config)
            return _watch_producer_id(_apply_topic_auto_creation(KafkaProducer(**kw), kw))

        return self.producers.get_or_create(key, build)

    def admin(self, opts: KafkaOptions,
              bootstrap_timeout: Optional[float] = None) -> tuple[KafkaAdminClient, threading.Lock]:
        """The shared admin client; a new one bootstraps for ``bootstrap_timeout`` s (None: kafka-python's
        30 s)."""
        return self.admins.get_or_create(
            opts.connection_key(),
            lambda: (_new_admin(dict(opts.connection_kwargs(), **_bootstrap_ms(bootstrap_timeout))),
                     threading.Lock()))

    def close_connection(self, opts: KafkaOptions) -> None:
        """Close this process's producers and admin client of one connection setting (a cluster that is gone
        for good: their reconnect attempts would otherwise go on for the life of the process)."""
        key = opts.connection_key()
        for pkey, p in self.producers.items():
            if pkey[0] == key and self.producers.pop_if(pkey, p):
                try:
                    p.close(timeout=0)
                except Exception:  # pending batches to a dead server: nothing to send them to
                    pass
        admin = self.admins.pop(key)
        if admin is not None:
            try:
                admin[0].close()
            except Exception:
                pass
        self.topics = {t for t in self.topics if t[0] != key}

    def close_all(self) -> None:
        for p in self.producers.clear():  # this process's only
            try:
                p.close(timeout=5)
            except Exception:  # interpreter shutdown: best effort
                pass
        for a, _ in self.admins.clear():
            try:
                a.close()
            except Exception:
                pass


_shared = _Shared()
atexit.register(_shared.close_all)

# The instances of this process that consume (own a KafkaConsumer). ``purge`` moves the partitions of its
# group's members here through their consumers: ``booster.clear()`` purges through the booster's publishing
# instance while the engine consumes through another one, and Kafka refuses the admin commit of a group
# with active members, even members of the calling process. Weak: a dropped broker leaves by itself.
def _refuse_oversized(producer: KafkaProducer, topic: str, records: list, items: list) -> None:
    """kafka-python's send() refuses a record above ``max_request_size`` synchronously, after the batch's
    earlier records were queued: they were sent, the batch was reported failed and retried (sent twice), and
    the later ones never went. Checked for the whole batch first: :class:`MessagesRefused` names the records
    refused (nothing is sent); the publishers send the others again."""
    limit = producer.config.get("max_request_size") or 0
    estimate = getattr(producer, "_estimate_size_in_bytes", None)
    bad = []
    for i, (value, key, headers) in enumerate(records):
        size = estimate(key, value, headers) if estimate else len(value) + len(key or b"") + 100
        if limit and size > limit:
            bad.append(i)
    if bad:
        ids = [items[i][2] for i in bad[:5]]
        raise MessagesRefused(f"kafka publish to {topic!r}: {len(bad)} message(s) larger than the producer's "
                              f"max_request_size ({limit} bytes), e.g. task ids {ids}: not sent", bad)


_consuming: "ProcessLocal[weakref.WeakSet[KafkaBroker]]" = ProcessLocal(weakref.WeakSet)
_consuming_lock = threading.Lock()


class _RebalanceListener(ConsumerRebalanceListener):
    """kafka-python 3 calls these on its I/O thread, while the thread that called ``poll()`` (holding the
    broker's consumer lock) waits for it: they must not block on the consumer (a blocking ``commit()``
    there raises, and the rejoin waited for the engine's fetch retry). Used where kafka-python cannot await a
    listener: the commit of revoked partitions is then sent without waiting (see ``_AwaitingRebalanceListener``
    for what that risks)."""

    def __init__(self, broker: "KafkaBroker") -> None:
        self._broker = broker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._broker._on_revoked(list(revoked), commit=True)

    def on_partitions_lost(self, lost: Any) -> None:
        # the group no longer knows this member (e.g. the coordinator restarted without its state, or the
        # session expired): a commit would be refused, so only forget the partitions
        self._broker._on_revoked(list(lost), commit=False)

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.debug("kafka %s: assigned %s", self._broker.topic, sorted(tp.partition for tp in assigned))
        self._broker._assigned_under = self._broker._known_topic_id()


if _AsyncListener is not None:
    class _AwaitingRebalanceListener(_RebalanceListener, _AsyncListener):
        """The commit of revoked partitions is awaited before the coordinator sends JoinGroup. Sent without
        waiting, it raced the join after a broker restart: the commit's answer (UNKNOWN_MEMBER_ID, the broker
        had lost the group) reset kafka-python's member id while the JoinGroup sent with the old id was in
        flight; the broker accepted that JoinGroup, the client discarded the answer and joined again under a
        new id, and the group held a member nobody spoke for. Every join then waited for that member: 14 s
        more on each restart here, and in CI once a group that stayed "rebalancing" for a minute. The I/O
        loop keeps running while this waits (heartbeats go on); the commit is bounded by the consumer's
        ``request_timeout_ms``."""

        async def on_partitions_revoked(self, revoked: Any) -> None:  # type: ignore[override]
            # a fetch's commit still in flight is as much a hazard as this one: wait for both answers
            in_flight = self._broker._commit_future
            future = self._broker._on_revoked(list(revoked), commit=True)
            for answer in (in_flight, future):
                if answer is not None and not answer.is_done:
                    try:
                        await answer
                    except Exception:  # noqa: BLE001 - logged by the commit's callback; the records are read again
                        pass

        async def on_partitions_lost(self, lost: Any) -> None:  # type: ignore[override]
            _RebalanceListener.on_partitions_lost(self, lost)

        async def on_partitions_assigned(self, assigned: Any) -> None:  # type: ignore[override]
            _RebalanceListener.on_partitions_assigned(self, assigned)

    _listener_class: type = _AwaitingRebalanceListener
else:
    _listener_class = _RebalanceListener


class KafkaBroker(Broker):
    """Kafka topic ``<queue>`` read by consumer group ``<queue>``; see ``docs/brokers/kafka.md``."""

    kind = "kafka"
    aliases = ()
    poll_while_busy = True  # keep the group membership alive while every worker is busy
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=False, dead_letter=True,
        native_delay=False, priority=False, ordering="partition", queue_size="approximate",
        in_flight_count=False, purge=True, broadcast=False, request_response=False, cross_process=True,
        pipelined_publish=True)
    options_model = KafkaOptions

    def __init__(self, queue_name: str, options: Optional[KafkaOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: KafkaOptions
        self.topic = self.options.topic or queue_name
        self.group_id = self.options.group_id or queue_name
        self._consumer: Optional[KafkaConsumer] = None
        self._consumer_lock = threading.RLock()  # the rebalance listener runs inside poll()
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        # polled records the engine had no room for yet, in poll order: (partition, [records])
        self._buffered: deque[tuple[TopicPartition, list[Any]]] = deque()
        self._commit_future: Any = None  # the async commit in flight, if any
        # while the broker is unreachable every fetch's commit fails: one warning per 10 s, not one per fetch
        self._commit_warning = ThrottledLog(log, every=10.0)
        self._commit_sent_at = 0.0
        self._probe: Optional[KafkaConsumer] = None  # group-less consumer reading high watermarks
        self._probe_lock = threading.Lock()
        self._closed = False
        self._producer: Optional[KafkaProducer] = None  # the shared one, looked up once per process
        self._producer_gen = -1
        self._topic_ready = False
        self._topic_id: Any = None  # the topic's id when first seen: another id means it was recreated
        self._assigned_under: Any = None  # the topic id the client knew when the group last assigned partitions

    # ----- availability -----
    @classmethod
    def check_available(cls, options: KafkaOptions) -> Optional[str]:
        errors = []
        for server in options.servers():
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2):
                    return None
            except (OSError, ValueError) as e:
                errors.append(f"{server}: {e}")
        return "no Kafka bootstrap server reachable (" + "; ".join(errors) + ")" + \
            " (set FUNBOOST_KAFKA_BOOTSTRAP_SERVERS or bootstrap_servers)"

    # ----- topics -----
    def _ensure_topic(self, deadline: Optional[float] = None) -> None:
        """Create the topic unless known; a new admin client bootstraps until ``deadline`` (monotonic)."""
        if self._topic_ready:
            return
        opts = self.options
        key = (opts.connection_key(), self.topic)
        if key in _shared.topics or not opts.auto_create_topic:
            self._topic_ready = True
            return
        admin, lock = _shared.admin(opts, None if deadline is None else max(0.001, deadline - time.monotonic()))
        with lock:
            try:
                admin.create_topics(
                    {self.topic: {"num_partitions": opts.num_partitions,
                                  "replication_factor": opts.replication_factor}},
                    raise_errors=True)
            except TopicAlreadyExistsError:
                pass
        _shared.topics.add(key)
        self._topic_ready = True

    def _ensure_topic_within(self, deadline: float) -> None:
        """:meth:`_ensure_topic` for a publish: retriable errors are tried again until ``deadline`` (the admin
        connection comes back a moment after a restarted broker does: NodeNotReadyError meanwhile), then
        raised as :class:`KafkaPublishError`."""
        while True:
            try:
                self._ensure_topic(deadline)
                return
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() >= deadline:
                    raise KafkaPublishError(f"kafka publish to {self.topic!r} on {self.options.servers()}: could not "
                                            f"check the topic: {type(exc).__name__}: {exc}") from exc
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _partitions(self) -> list[TopicPartition]:
        admin, lock = _shared.admin(self.options)
        with lock:
            desc = admin.describe_topics([self.topic])
        parts = []
        for t in desc:
            if t.get("name") == self.topic and not t.get("error_code"):
                parts = [TopicPartition(self.topic, p["partition_index"]) for p in t["partitions"]]
        return sorted(parts)

    # ----- publish -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        deadline = time.monotonic() + self.options.publish_timeout  # connecting included
        self._ensure_topic_within(deadline)
        self._produce(self.topic, [(m.body, m.key, m.task_id, m.headers) for m in messages], deadline=deadline)

    def publish_begin(self, messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
        """Hand the batch to the producer now; the returned function waits for the broker's acks."""
        if not messages or not self.options.wait_for_ack:
            return super().publish_begin(messages)
        deadline = time.monotonic() + self.options.publish_timeout
        self._ensure_topic_within(deadline)
        return self._produce(self.topic, [(m.body, m.key, m.task_id, m.headers) for m in messages], wait=False,
                             deadline=deadline)

    def _produce(self, topic: str, items: list[tuple[Any, Optional[Any], str, dict]],
                 wait: bool = True, deadline: Optional[float] = None) -> Callable[[], None]:
        producer, futures = self._send(topic, items, deadline)
        timeout = self.options.publish_timeout

        def confirm() -> None:
            deadline = time.monotonic() + timeout
            current, pending, futs = producer, items, futures
            while True:
                try:
                    self._await(current, topic, futs, deadline)
                    return
                except (_ProducerStranded, KafkaError) as exc:
                    # A producer that failed may never recover on its own (after a broker restart kafka-python
                    # keeps asking for its old producer id; a restarted in-memory broker also forgot the
                    # topic): the next publish starts from a new producer and checks the topic again.
                    self._discard_producer(current)
                    # stranded: marked by the sender hook (lost id) or by _await (topic gone), also when the
                    # error came from another publish discarding this shared producer
                    if not getattr(current, "_funboost_stranded", False) or time.monotonic() >= deadline:
                        raise KafkaPublishError(
                            f"kafka publish of {len(items)} message(s) to {topic!r} on {self.options.servers()} "
                            f"was not acknowledged within {timeout}s: {type(exc).__name__}: {exc}") from exc
                    # the broker lost its state: send what is not acknowledged yet from a new producer, once the
                    # topic is there again (at least once: a message the old one did get stored may be stored twice)
                    pending = [item for item, f in zip(pending, futs) if not (f.is_done and f.succeeded())]
                    log.warning("kafka broker %s lost this producer's state (%s): resending %d message(s) to %r "
                                "from a new producer", self.options.servers(), exc, len(pending), topic)
                    self._ensure_topic_within(deadline)
                    current, futs = self._send(topic, pending, deadline)

        if wait and self.options.wait_for_ack:
            confirm()
        return confirm

    def _send(self, topic: str, items: list[tuple[Any, Optional[Any], str, dict]],
              deadline: Optional[float] = None) -> tuple[KafkaProducer, list]:
        producer = self._producer
        if producer is None or self._producer_gen != fork_generation():
            try:
                producer = _shared.producer(
                    self.options, None if deadline is None else max(0.001, deadline - time.monotonic()))
            except KafkaError as exc:  # e.g. no bootstrap server answered in time
                raise KafkaPublishError(f"kafka publish to {topic!r} on {self.options.servers()}: could not start "
                                        f"the producer: {type(exc).__name__}: {exc}") from exc
            self._producer = producer
            self._producer_gen = fork_generation()
        records = []
        for body, key, task_id, extra_headers in items:
            value = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            if isinstance(key, str):
                key = key.encode("utf-8")
            headers = [(TASK_ID_HEADER, task_id.encode("utf-8"))] if task_id else []
            if extra_headers:
                headers.extend((k, str(v).encode("utf-8")) for k, v in extra_headers.items())
            records.append((value, key, headers))
        _refuse_oversized(producer, topic, records, items)  # before anything of the batch is sent
        _track_topic(producer, topic)
        futures = []
        for value, key, headers in records:
            try:
                futures.append(producer.send(topic, value=value, key=key, headers=headers or None))
            except KafkaTimeoutError as exc:
                # the topic may be gone (a restarted broker without its data): the next publish checks it again
                # and creates it, rather than each one waiting for metadata of a topic nobody re-creates
                _shared.topics.discard((self.options.connection_key(), topic))
                self._topic_ready = False
                hint = "" if self.options.auto_create_topic else " (auto_create_topic is off: create the topic first)"
                raise KafkaPublishError(
                    f"kafka publish to {topic!r} on {self.options.servers()}: the producer could not take the "
                    f"message within {self.options.publish_timeout}s (the topic is not in the cluster's metadata, "
                    f"or the producer's buffer stayed full){hint}: {exc}") from exc
        return producer, futures

    @staticmethod
    def _await(producer: KafkaProducer, topic: str, futures: list, deadline: float) -> None:
        """Wait for the broker's acks of ``futures`` until ``deadline``; raise the produce error, or
        :class:`_ProducerStranded` as soon as the producer is known to be unable to deliver them."""
        while True:
            try:
                # flush: send what linger holds back now; in slices, to notice a stranded producer early
                producer.flush(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
                break
            except KafkaTimeoutError:
                if getattr(producer, "_funboost_stranded", False):
                    raise _ProducerStranded("the broker lost this producer's id or its topic") from None
                # The cluster's metadata no longer lists the topic (a broker back without its log): the batch
                # waits for a partition leader that never comes, and no produce error ever reports it. Which of
                # the two a restart shows first depends on whether the producer's metadata refresh or its
                # produce request reaches the broker first.
                metadata = getattr(producer, "_metadata", None)
                if metadata is not None and metadata.partitions_for_topic(topic) is None:
                    producer._funboost_stranded = True  # other publishes waiting on it resend too
                    raise _ProducerStranded(f"the cluster no longer knows the topic {topic!r}") from None
                if time.monotonic() >= deadline:
                    raise
        for f in futures:
            f.get(timeout=max(0.1, deadline - time.monotonic()))  # raises the produce error, if any

    def _discard_producer(self, producer: KafkaProducer) -> None:
        key = _shared.producer_key(self.options)
        if _shared.producers.pop_if(key, producer):
            try:
                producer.close(timeout=0)
            except KafkaError:
                # kafka-python's close() raises from its flush while batches are pending and then leaves the
                # sender thread running: stop that thread without sending (the publish already failed)
                sender = getattr(producer, "_sender", None)
                if sender is not None:
                    sender.force_close()
                producer._closed = True  # its __del__ would try (and fail) the same close again
        self._producer = None
        _shared.topics.discard((self.options.connection_key(), self.topic))
        self._topic_ready = False

    # ----- consume -----
    def _ensure_consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            self._ensure_topic()
            opts = self.options
            kw = dict(
                opts.client_kwargs(),
                group_id=self.group_id,
                client_id=f"funboost-{self.consumer_id}",
                enable_auto_commit=False,
                auto_offset_reset=opts.auto_offset_reset,
                session_timeout_ms=opts.session_timeout_ms,
                heartbeat_interval_ms=opts.heartbeat_interval_ms,
                max_poll_interval_ms=opts.max_poll_interval_ms,
                fetch_max_wait_ms=opts.fetch_max_wait_ms,
            )
            kw.update(opts.consumer_config)
            consumer = _apply_topic_auto_creation(KafkaConsumer(**kw), kw)
            consumer.subscribe([self.topic], listener=_listener_class(self))
            self._consumer = consumer
            with _consuming_lock:
                _consuming.get().add(self)
        return self._consumer

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            # keep-alive poll while the engine is busy: pause every partition so poll() returns no
            # records but still counts for max_poll_interval_ms, and commit what has finished
            with self._consumer_lock:
                if self._closed or self._consumer is None:
                    return []
                consumer = self._consumer
                self._commit_safe(sync=False)
                if self._join_pending(consumer):
                    self._finish_join(consumer, self.options.max_poll_records)
                    return []
                assigned = list(consumer.assignment())
                if assigned:
                    consumer.pause(*assigned)
                try:
                    # a rebalance that completes inside this poll assigns unpaused partitions: keep what
                    # they return (dropped, it would never be tracked, and a later commit would skip it)
                    self._buffered.extend(consumer.poll(timeout_ms=0).items())
                finally:
                    if assigned:
                        consumer.resume(*[tp for tp in assigned if tp in consumer.assignment()])
                self._reset_if_topic_recreated(consumer)
            return []
        with self._consumer_lock:
            if self._closed:
                return []
            consumer = self._ensure_consumer()
            self._commit_safe(sync=False)
            max_records = max(max_count, self.options.max_poll_records)
            if not self._buffered and self._join_pending(consumer):
                self._finish_join(consumer, max_records)
            if not self._buffered:
                # Poll a full batch even when the engine has room for fewer: every poll() costs a few
                # hand-offs to kafka-python's I/O thread, so polling per ~20 free slots would spend
                # more time there than in decoding. What does not fit waits in ``_buffered`` (neither
                # handed out nor tracked, so never committed) for the next fetch.
                records = consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
                self._buffered.extend(records.items())
                if not records:
                    self._reset_positions_beyond_end(consumer)
            self._reset_if_topic_recreated(consumer)
            return self._take(max_count)

    def _reset_if_topic_recreated(self, consumer: KafkaConsumer) -> None:
        """A topic deleted and created again (or a broker that came back without its data) starts its
        partitions at offset 0, while this consumer's positions still point into the old log. Left alone,
        a position below the new end skips the new records before it, and one beyond the end waits for
        ever on a broker that does not answer OFFSET_OUT_OF_RANGE (Tansu; seen in CI as a consumer that
        never resumed after a broker restart). kafka-python sees the new topic id in its metadata; the
        positions are then reset by ``auto_offset_reset``, and what was polled or handed out from the old
        log is forgotten (its acks no longer commit anything). Consumer lock held."""
        topic_id = self._known_topic_id()
        if topic_id is None or topic_id == self._topic_id:
            return
        first_sight, self._topic_id = self._topic_id is None, topic_id
        if first_sight:
            return
        if self._assigned_under == topic_id:
            # the group was joined again after the broker came back (it had forgotten this member): the
            # positions already come from the new log, and nothing of the old one is tracked any more
            log.info("kafka %s: the topic was recreated (new topic id); the group was joined since", self.topic)
            return
        assigned = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        log.warning("kafka %s: the topic was recreated (new topic id); %d assigned partition(s) start again "
                    "from the %s offset", self.topic, len(assigned), self.options.auto_offset_reset)
        self._start_again(consumer, assigned)
        # A broker that lost the topic has most likely lost the group too. Confirm the membership (rejoin)
        # before anything of the new log is handed out: otherwise its first records ran at once, the member
        # learnt from its next commit that the group had forgotten it, and after the rejoin the same records
        # ran again (the broker-restart reliability test: up to all 250 records of the restart, in 6 of 16 runs).
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()

    def _known_topic_id(self) -> Any:
        """The topic's id in the consumer's cluster metadata (None: not known, or no consumer)."""
        consumer = self._consumer
        cluster: Any = getattr(getattr(consumer, "_client", None), "cluster", None)
        return cluster.topic_id(self.topic) if hasattr(cluster, "topic_id") else None

    def _start_again(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        """Forget what was polled or handed out of these partitions (their acks commit nothing) and move them
        to the ``auto_offset_reset`` end. Consumer lock held."""
        self._on_revoked(tps, commit=False)
        if tps:
            if self.options.auto_offset_reset == "latest":
                consumer.seek_to_end(*tps)
            else:
                consumer.seek_to_beginning(*tps)

    def _reset_positions_beyond_end(self, consumer: KafkaConsumer) -> None:
        """A position beyond its partition's end is out of range: Kafka answers OFFSET_OUT_OF_RANGE and the
        client resets it by ``auto_offset_reset``; Tansu answers with no records and the consumer waits for
        ever. Such a position comes from the group's committed offset after the broker came back without its
        log (a commit of the old log that reached the new broker, or a topic recreated under an unchanged
        id). The end is the high watermark of the partition's last fetch answer; the same answer moved the
        position, so a valid position is never beyond it. Checked when a poll returned nothing. Consumer
        lock held."""
        subscription = getattr(consumer, "_subscription", None)
        if subscription is None or not hasattr(subscription, "has_valid_position"):
            return
        beyond = []
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None or not subscription.has_valid_position(tp):
                continue
            position = subscription.position(tp)
            offset = getattr(position, "offset", position)
            if isinstance(offset, int) and offset > end:
                beyond.append((tp, offset, end))
        if not beyond:
            return
        log.warning("kafka %s: position beyond the end of partition(s) %s (the broker lost its log?); they start "
                    "again from the %s offset", self.topic,
                    ", ".join(f"{tp.partition} ({offset} > {end})" for tp, offset, end in beyond),
                    self.options.auto_offset_reset)
        self._start_again(consumer, [tp for tp, _, _ in beyond])

    @staticmethod
    def _join_pending(consumer: KafkaConsumer) -> bool:
        """True while the group (re)join has not been completed by a poll() (first join, or after a rebalance
        or the loss of the membership)."""
        state = getattr(consumer.group_metadata(), "state", None)  # not reported by the first 3.0 releases
        if state is not None:
            return state != _MEMBER_STABLE
        return not consumer.assignment()

    def _finish_join(self, consumer: KafkaConsumer, max_records: int) -> None:
        """Wait for a pending join inside one poll(). kafka-python 3 (3.0.12) forgets a JoinGroup/SyncGroup
        that completes while no poll() waits for it and sends another JoinGroup: after a broker restart the
        test broker (which holds a join for half the session timeout) took 3 s more each time, as a join
        ended just as the engine's 1 s poll timed out; with the engine busy (keep-alive polls 0.5 s apart)
        a member never finished its join, and on Kafka a leader that joins again rebalances the whole
        group. Records that arrive once joined are kept for the next fetch. Consumer lock held."""
        records = consumer.poll(timeout_ms=self.options.session_timeout_ms, max_records=max_records)
        self._buffered.extend(records.items())

    def _take(self, max_count: int) -> list[Delivery]:
        """Hand out up to ``max_count`` buffered records, tracking their offsets. Consumer lock held."""
        out: list[Delivery] = []
        buffered = self._buffered
        need = max_count
        while need > 0 and buffered:
            tp, recs = buffered[0]
            if len(recs) <= need:
                buffered.popleft()
            else:
                buffered[0] = (tp, recs[need:])
                recs = recs[:need]
            need -= len(recs)
            tracker = self._trackers.get(tp)
            if tracker is None:
                tracker = self._trackers[tp] = PartitionTracker()
            tracker.add_many([r.offset for r in recs])
            for r in recs:
                task_id = ""
                if r.headers:
                    for hk, hv in r.headers:
                        if hk == TASK_ID_HEADER and hv:
                            task_id = hv.decode("utf-8", "replace")
                            break
                # the raw bytes: the engine parses JSON from bytes directly (no str copy)
                out.append(Delivery(body=r.value, tag=(tp, r.offset, tracker, r.key), task_id=task_id))
        return out

    def _drop_buffered(self, tps: Any) -> None:
        """Forget polled-but-unhanded records of these partitions (revoked or seeked)."""
        if self._buffered:
            tps = set(tps)
            self._buffered = deque(item for item in self._buffered if item[0] not in tps)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        # Mark offsets finished (any thread). A delivery of a revoked partition marks its dropped
        # tracker, which nobody commits from any more.
        by_tracker: dict[int, tuple[PartitionTracker, list[int]]] = {}
        for d in deliveries:
            tracker = d.tag[2]
            entry = by_tracker.get(id(tracker))
            if entry is None:
                entry = by_tracker[id(tracker)] = (tracker, [])
            entry[1].append(d.tag[1])
        for tracker, offsets in by_tracker.values():
            tracker.done_many(offsets)  # one lock round per partition and batch
        # Commit now only if the consumer is free (never wait for a fetch in progress: the fetch
        # commits before it polls). kafka-python 3 does its I/O on its own thread; the lock keeps
        # our calls into the consumer one at a time.
        self._try_commit(blocking=False)

    def _try_commit(self, blocking: bool) -> None:
        if self._consumer is None:
            return
        if not self._consumer_lock.acquire(blocking=blocking, timeout=5 if blocking else -1):
            return
        try:
            if not self._closed:
                self._commit_safe(sync=blocking)
        finally:
            self._consumer_lock.release()

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Kafka cannot put a record back: produce it again at the end of the topic (same key, so the
        same partition), then mark the original done."""
        if not deliveries:
            return
        self._produce(self.topic, [(d.body, d.tag[3], d.task_id, {}) for d in deliveries])
        self.ack(deliveries)

    def dead_letter_target(self) -> tuple[type[Broker], Any]:
        return type(self), self.options.model_copy(update={
            "topic": dead_letter_queue_name(self.topic), "group_id": dead_letter_queue_name(self.group_id)})

    # ----- commits -----
    def _commit_safe(self, sync: bool, only: Optional[Sequence[TopicPartition]] = None) -> None:
        """Commit, per partition, the lowest unfinished offset if it moved. Caller holds the consumer lock."""
        consumer = self._consumer
        if consumer is None:
            return
        pending = self._commit_future
        if not sync and pending is not None and not pending.is_done \
                and time.monotonic() - self._commit_sent_at < 5.0:
            # one async commit in flight at a time: the next one carries everything finished
            # meanwhile (firing one per ack batch overflows the coordinator connection's
            # max_in_flight and they fail with NodeNotReadyError). 5 s: never wait on a lost answer.
            return
        offsets = {}
        for tp in (only if only is not None else list(self._trackers)):
            tracker = self._trackers.get(tp)
            off = tracker.to_commit() if tracker is not None else None
            if off is not None:
                offsets[tp] = off
        if not offsets:
            return
        payload = {tp: _commit_meta(off) for tp, off in offsets.items()}
        try:
            if sync:
                consumer.commit(payload)
            else:
                self._commit_future = consumer.commit_async(payload, callback=self._on_commit_done)
                self._commit_sent_at = time.monotonic()
        except KafkaError as e:
            # e.g. a rebalance is in progress: the records are redelivered, never lost
            self._commit_warning("kafka %s: commit of %s failed (records will be redelivered): %r",
                                 self.topic, offsets, e)
            return
        for tp, off in offsets.items():
            tracker = self._trackers.get(tp)
            if tracker is not None:
                tracker.committed = off

    def _commit_revoked(self, revoked: list[TopicPartition]) -> Any:
        """Send the commit of what finished in ``revoked``; return its kafka-python future (None: nothing sent)."""
        consumer = self._consumer
        offsets = {}
        for tp in revoked:
            tracker = self._trackers.get(tp)
            off = tracker.to_commit() if tracker is not None else None
            if off is not None:
                offsets[tp] = _commit_meta(off)
        if consumer is None or not offsets:
            return None
        try:
            return consumer.commit_async(offsets, callback=self._on_revoked_commit_done)
        except KafkaError as e:
            log.warning("kafka %s: commit of revoked partitions failed (their records will be read again): %r",
                        self.topic, e)
            return None

    def _on_revoked_commit_done(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            log.warning("kafka %s: commit of revoked partitions failed (their records will be read again): %r",
                        self.topic, response)

    def _on_commit_done(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            self._commit_warning("kafka %s: async commit failed (records will be redelivered): %r",
                                 self.topic, response)
            # let the next fetch commit these partitions again
            for tp in offsets:
                tracker = self._trackers.get(tp)
                if tracker is not None:
                    tracker.committed = None

    def _on_revoked(self, revoked: list[TopicPartition], commit: bool) -> Any:
        # Runs on kafka-python's I/O thread during a consumer.poll() (whose caller holds the consumer lock).
        # The commit's future is returned for the rebalance listener to await before the JoinGroup (where
        # kafka-python can); if the commit fails the records are read again.
        future = self._commit_revoked(revoked) if commit else None
        self._drop_buffered(revoked)
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                tracker.revoked = True
                if tracker.in_flight():
                    log.info("kafka %s: partition %d revoked with %d unfinished record(s); the new "
                             "owner runs them again", self.topic, tp.partition, tracker.in_flight())
        return future

    # ----- sizes -----
    def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        admin, lock = _shared.admin(self.options)
        with lock:
            latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        ends = {tp: latest[tp].offset for tp in tps}
        if self.options.verify_end_offsets:
            ends = self._verify_ends(ends)
        return ends

    def _verify_ends(self, ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Read the high watermark from a fetch at ``end - 1``: it is the true end even where the
        broker's ListOffsets answer is off (Tansu reports the last batch's base offset + 1)."""
        need = {tp: off for tp, off in ends.items() if off > 0}
        if not need:
            return ends
        with self._probe_lock:
            if self._probe is None:
                kw = dict(self.options.client_kwargs(), group_id=None, enable_auto_commit=False,
                          fetch_max_wait_ms=10, client_id=f"funboost-probe-{self.consumer_id}")
                self._probe = _apply_topic_auto_creation(KafkaConsumer(**kw), kw)
            probe = self._probe
            probe.assign(list(need))
            for tp, off in need.items():
                probe.seek(tp, off - 1)
            result = dict(ends)
            pending = set(need)
            deadline = time.monotonic() + 3.0
            while pending and time.monotonic() < deadline:
                records = probe.poll(timeout_ms=200, max_records=100_000)
                for tp, recs in records.items():
                    if recs:
                        result[tp] = max(result[tp], recs[-1].offset + 1)
                for tp in list(pending):
                    hw = probe.highwater(tp)
                    if hw is not None:
                        result[tp] = max(result[tp], hw)
                        pending.discard(tp)
            return result

    def _group_positions(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the group resumes in each partition: its committed offset, else the reset point."""
        admin, lock = _shared.admin(self.options)
        with lock:
            committed = admin.list_group_offsets({self.group_id: tps}).get(self.group_id, {})
            missing = [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
            start = {}
            if missing:
                spec = OffsetSpec.EARLIEST if self.options.auto_offset_reset == "earliest" else OffsetSpec.LATEST
                start = admin.list_partition_offsets({tp: spec for tp in missing})
        pos = {}
        for tp in tps:
            if tp in committed and committed[tp].offset >= 0:
                pos[tp] = committed[tp].offset
            else:
                pos[tp] = start[tp].offset
        return pos

    def _lag(self) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        self._ensure_topic()
        tps = self._partitions()
        if not tps:
            return {}, {}
        pos = self._group_positions(tps)
        ends = self._end_offsets(tps)
        return pos, ends

    def queue_size(self) -> QueueSize:
        """Consumer-group lag: sum over partitions of end offset minus the group's committed offset.
        Records fetched but not yet finished are part of it (Kafka cannot tell them apart)."""
        self._try_commit(blocking=True)  # finished work counts as gone at once
        pos, ends = self._lag()
        return QueueSize(ready=sum(max(0, ends[tp] - pos[tp]) for tp in ends))

    def _members_here(self) -> list["KafkaBroker"]:
        """This instance and the consuming instances of its group and topic in this process, in one order
        (by id) for every caller, so that two purges never wait on each other's consumer locks."""
        key = (self.options.connection_key(), self.group_id, self.topic)
        with _consuming_lock:
            found = {b for b in _consuming.get()
                     if (b.options.connection_key(), b.group_id, b.topic) == key}
        found.add(self)
        return sorted(found, key=id)

    def purge(self) -> int:
        """Move the group's committed offsets to the end of every partition. Partitions consumed in this
        process (by this instance or another one of the same group: the engine's, while ``booster.clear()``
        purges through the booster's publishing instance) are committed by their own consumer; the others
        through the admin API, which Kafka only allows while no other member of the group is active."""
        members = self._members_here()
        with contextlib.ExitStack() as locks:
            for m in members:
                locks.enter_context(m._consumer_lock)
            consuming = []
            for m in members:
                consumer = m._consumer if not m._closed else None
                if consumer is None:
                    continue
                if not consumer.assignment():
                    # This member is still joining: the broker would refuse the admin commit while it
                    # is. Finish the join; whatever poll hands over meanwhile lies below the end
                    # offsets measured afterwards, so it is purged too.
                    deadline = time.monotonic() + m.options.session_timeout_ms / 1000 + 2
                    while not consumer.assignment() and time.monotonic() < deadline:
                        consumer.poll(timeout_ms=100, max_records=1)
                consuming.append(m)
            return self._purge_locked(consuming)

    def _purge_locked(self, members: Sequence["KafkaBroker"]) -> int:
        """The caller holds the consumer lock of every instance in ``members`` (each has a consumer)."""
        pos, ends = self._lag()
        if not ends:
            return 0
        dropped = 0
        own: set[TopicPartition] = set()
        for m in members:
            consumer = m._consumer
            if consumer is None:
                continue
            mine = (set(consumer.assignment()) & set(ends)) - own
            if not mine:
                continue
            consumer.commit({tp: _commit_meta(ends[tp]) for tp in mine})
            m._drop_buffered(mine)
            for tp in mine:
                consumer.seek(tp, ends[tp])
                old = m._trackers.pop(tp, None)
                if old is not None:
                    old.revoked = True
                dropped += max(0, ends[tp] - pos[tp])
            own |= mine
        others = {tp: _commit_meta(ends[tp]) for tp in ends if tp not in own}
        if others:
            admin, lock = _shared.admin(self.options)
            with lock:
                result = admin.alter_group_offsets(self.group_id, others)
            failed = {tp: err for tp, err in result.items() if err is not None and err.errno != 0}
            for tp in others:
                if tp not in failed:
                    dropped += max(0, ends[tp] - pos[tp])
            if failed:
                raise RuntimeError(
                    f"kafka purge of {self.topic!r}: group {self.group_id!r} has active members in other "
                    f"processes; partitions {sorted(tp.partition for tp in failed)} were not moved "
                    f"({sorted({e.__name__ for e in failed.values()})}). Stop the consumers, or purge "
                    f"from a consumer process (a consumer killed without leaving the group counts as a "
                    f"member until the broker expires its session).")
        return dropped

    # ----- shutdown -----
    def close(self) -> None:
        with self._consumer_lock:
            if not self._closed:
                self._closed = True
                if self._consumer is not None:
                    try:
                        self._commit_safe(sync=True)
                    except Exception as e:  # never block shutdown on a commit
                        log.warning("kafka %s: final commit failed: %r", self.topic, e)
                    try:
                        self._consumer.close(autocommit=False)
                    except Exception:
                        pass
                    self._consumer = None
                    self._trackers.clear()
                    self._buffered.clear()
                    with _consuming_lock:
                        _consuming.get().discard(self)
        with self._probe_lock:
            if self._probe is not None:
                try:
                    self._probe.close(autocommit=False)
                except Exception:
                    pass
                self._probe = None
        super().close()
