"""The kafka broker against a real Kafka-compatible server on loopback (no mocks)."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
from funboost.testing import wait_until
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

from funboost.plugins.broker import OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost_kafka.broker import KafkaBroker
from funboost_kafka.options import KafkaOptions

from conftest import make_options


def msgs(n, prefix="t", key=None):
    return [OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"{prefix}{i}"}}),
                            task_id=f"{prefix}{i}", key=key) for i in range(n)]


# A new consumer's first records wait for its group join; on a loaded 2-core CI host the test broker once
# took longer than 15 s for it (test_purge_moves_group_to_end got nothing). The deadline only matters
# when something is wrong, so it is generous.
def fetch_until(broker, n, deadline_s=45.0, max_count=100):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < deadline:
        got += broker.fetch(max_count, 0.5)
    return got


def committed(broker: KafkaBroker) -> dict[int, int]:
    admin = KafkaAdminClient(**broker.options.connection_kwargs())
    try:
        res = admin.list_group_offsets({broker.group_id: None}).get(broker.group_id, {})
        return {tp.partition: om.offset for tp, om in res.items() if tp.topic == broker.topic}
    finally:
        admin.close()


def wait_for(cond, deadline_s=10.0, what="condition"):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_registered_by_entry_point():
    cls = resolve_broker_kind("KAFKA")
    assert cls is KafkaBroker and cls.distribution == "funboost-kafka"
    caps = cls.capabilities
    assert caps.at_least_once and not caps.native_delay and not caps.native_requeue
    assert caps.ordering == "partition" and caps.queue_size == "approximate"


def test_options_env_and_validation(monkeypatch):
    monkeypatch.setenv("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "h1:9092, h2:9093")
    monkeypatch.setenv("FUNBOOST_KAFKA_SASL_USERNAME", "u")
    opts = KafkaOptions()
    assert opts.servers() == ["h1:9092", "h2:9093"]
    assert opts.connection_kwargs()["sasl_plain_username"] == "u"
    assert KafkaOptions(bootstrap_servers="x:1").servers() == ["x:1"]
    with pytest.raises(Exception):
        KafkaOptions(bootstrap_server="typo:1")
    monkeypatch.delenv("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS")
    assert KafkaOptions().servers() == ["127.0.0.1:19092"]


def test_check_available_reports_reason():
    reason = KafkaBroker.check_available(KafkaOptions(bootstrap_servers="127.0.0.1:1"))
    assert reason and "127.0.0.1:1" in reason


def test_publish_fetch_ack_headers_keys(brokers, queue_name):
    b = brokers(queue_name, compression_type="gzip")
    b.publish(msgs(6, key="k1") + msgs(3, prefix="u"))
    # a consumer joining an idle group gets messages without waiting out a session timeout (~45 s); how
    # fast is the bench's business, not this test's
    got = fetch_until(b, 9, deadline_s=30.0)
    assert sorted(d.task_id for d in got) == sorted([f"t{i}" for i in range(6)] + [f"u{i}" for i in range(3)])
    # one key -> one partition, in publish order
    keyed = [d for d in got if d.task_id.startswith("t")]
    assert len({d.tag[0] for d in keyed}) == 1
    assert [json.loads(d.body)["i"] for d in keyed] == list(range(6))
    b.ack(got)
    b.fetch(10, 0.1)  # the fetch thread commits
    wait_for(lambda: b.queue_size().ready == 0, what="lag 0")


def test_lag_counts_records_in_multi_record_batches(brokers, queue_name):
    b = brokers(queue_name, linger_ms=50)
    b.publish(msgs(50))  # batched by the producer
    assert b.queue_size().ready == 50
    got = fetch_until(b, 50)
    assert len(got) == 50
    assert b.queue_size().ready == 50  # fetched, not finished: still lag
    by_part: dict[int, list] = {}
    for d in got:
        by_part.setdefault(d.tag[0].partition, []).append(d)
    part, ds = sorted(by_part.items())[0]
    b.ack([d for d in got if d.tag[0].partition != part])
    b.fetch(10, 0.1)
    wait_for(lambda: b.queue_size().ready == len(ds), what="lag = the unacked partition")


def test_out_of_order_never_commits_past_unfinished(brokers, queue_name):
    """Slow early messages: later ones finish first; the commit stays at the first unfinished one,
    and a consumer that dies there gets the unfinished ones (only) back."""
    b = brokers(queue_name, num_partitions=1)
    b.publish(msgs(10))
    got = fetch_until(b, 10)
    assert [d.tag[1] for d in got] == list(range(10))
    b.ack(got[3:])  # 0..2 are still "running"
    for _ in range(3):
        b.fetch(10, 0.2)
    wait_for(lambda: committed(b).get(0) == 0, what="commit stays at 0")
    assert committed(b)[0] == 0
    b.ack([got[1]])
    b.fetch(10, 0.2)
    time.sleep(0.3)
    b.fetch(10, 0.2)
    assert committed(b)[0] == 0  # 0 still unfinished
    b.ack([got[0]])
    b.fetch(10, 0.2)
    wait_for(lambda: committed(b).get(0) == 2, what="commit moves to 2")
    # the consumer "dies" with offset 2 unfinished: close without acking (close commits what is safe)
    b.close()
    b2 = brokers(queue_name, num_partitions=1)
    again = fetch_until(b2, 8)
    assert [d.tag[1] for d in again] == list(range(2, 10))
    assert again[0].task_id == "t2"


def test_polled_but_not_handed_out_is_never_committed(brokers, queue_name):
    """fetch(3) polls a larger batch; what the engine did not receive stays uncommitted and is
    handed out by later fetches, or read again by the next member if this one goes away."""
    b = brokers(queue_name, num_partitions=1)
    b.publish(msgs(20))
    first = fetch_until(b, 3, max_count=3)
    assert [d.tag[1] for d in first] == [0, 1, 2]
    b.ack(first)
    b.fetch(0, 0.0)  # keep-alive poll commits what has finished
    wait_for(lambda: committed(b).get(0) == 3, what="commit of the 3 handed-out records")
    nxt = b.fetch(2, 0.2)  # served from what the first poll brought
    assert [d.tag[1] for d in nxt] == [3, 4]
    b.ack(nxt)
    b.close()
    assert committed(b)[0] == 5
    b2 = brokers(queue_name, num_partitions=1)
    rest = fetch_until(b2, 15)
    assert [d.tag[1] for d in rest] == list(range(5, 20))


def test_requeue_reproduces_then_commits(brokers, queue_name):
    b = brokers(queue_name, num_partitions=1)
    b.publish(msgs(1))
    [d] = fetch_until(b, 1)
    b.requeue([d])
    [d2] = fetch_until(b, 1)
    assert d2.task_id == d.task_id and d2.tag[1] == d.tag[1] + 1 and d2.body == d.body
    b.ack([d2])
    b.fetch(1, 0.1)
    wait_for(lambda: committed(b).get(0) == 2, what="both offsets committed")


def test_reject_goes_to_dlx_topic(brokers, queue_name):
    b = brokers(queue_name)
    b.publish(msgs(2))
    got = fetch_until(b, 2)
    b.reject(got, "bad input")
    dlx = brokers(queue_name + "_dlx")
    dead = fetch_until(dlx, 2)
    assert sorted(d.task_id for d in dead) == ["t0", "t1"]
    assert all(json.loads(d.body)["extra"]["dead_letter_reason"] == "bad input" for d in dead)
    b.fetch(1, 0.1)
    wait_for(lambda: b.queue_size().ready == 0, what="originals committed")


def test_purge_moves_group_to_end(brokers, queue_name):
    pub = brokers(queue_name)
    pub.publish(msgs(20))
    assert pub.queue_size().ready == 20
    assert pub.purge() == 20
    assert pub.queue_size().ready == 0
    pub.publish(msgs(2, prefix="after"))
    c = brokers(queue_name)
    got = fetch_until(c, 2)
    time.sleep(0.3)
    got += c.fetch(100, 0.3)
    assert sorted(d.task_id for d in got) == ["after0", "after1"]


def test_purge_from_the_consuming_instance(brokers, queue_name):
    b = brokers(queue_name)
    b.publish(msgs(9))
    got = fetch_until(b, 9)
    b.publish(msgs(4, prefix="x"))
    assert b.purge() == 13
    assert b.queue_size().ready == 0
    b.ack(got)  # late acks of purged work are harmless
    assert b.fetch(10, 0.5) == []
    assert b.queue_size().ready == 0


def test_rebalance_member_joins_and_leaves(brokers, queue_name):
    """Two members in one process (separate consumers): every message is processed at least once
    while a member joins and later leaves, and the joiner receives some partitions."""
    import threading

    a = brokers(queue_name)
    b = brokers(queue_name)
    seen: dict[str, set] = {"a": set(), "b": set()}
    stop = {"a": threading.Event(), "b": threading.Event()}

    def loop(name, broker):
        while not stop[name].is_set():
            ds = broker.fetch(20, 0.3)
            seen[name].update(d.task_id for d in ds)
            broker.ack(ds)
        broker.close()

    a.publish(msgs(30, prefix="p1_"))
    ta = threading.Thread(target=loop, args=("a", a), daemon=True)
    ta.start()
    wait_for(lambda: len(seen["a"]) == 30, deadline_s=15, what="a alone consumes phase 1")
    assert len(a._consumer.assignment()) == 3
    tb = threading.Thread(target=loop, args=("b", b), daemon=True)
    tb.start()
    wait_for(lambda: a._consumer is not None and len(a._consumer.assignment()) < 3, deadline_s=20,
             what="a gives up partitions to the joiner")
    # the revoke listener ran (on kafka-python's I/O thread, where a blocking commit used to raise before the
    # member forgot the partitions): a tracks only what it still owns
    wait_for(lambda: set(dict(a._trackers)) <= set(a._consumer.assignment()), deadline_s=10,
             what="a stops tracking the partitions it gave up")
    a.publish(msgs(60, prefix="p2_"))
    expected2 = {f"p2_{i}" for i in range(60)}
    wait_for(lambda: expected2 <= (seen["a"] | seen["b"]), deadline_s=20, what="phase 2 consumed")
    assert seen["b"] & expected2, "the joiner got part of the work"
    stop["b"].set()
    tb.join(10)
    wait_for(lambda: len(a._consumer.assignment()) == 3, deadline_s=20, what="a takes all back")
    a.publish(msgs(30, prefix="p3_"))
    expected3 = {f"p3_{i}" for i in range(30)}
    wait_for(lambda: expected3 <= seen["a"], deadline_s=15, what="phase 3 consumed by a")
    stop["a"].set()
    ta.join(10)
    probe = brokers(queue_name)
    assert probe.queue_size().ready == 0


def test_publish_recovers_after_broker_restart(private_kafka):
    """Found by tests/reliability/test_broker_restart.py: after the broker restarted, every publish hung in
    producer.flush() (no timeout; kafka-python kept asking for its old producer id) or failed for good. Now a
    publish after the restart notices the lost producer id and resends from a new producer. A producer that
    cannot refresh its metadata within publish_timeout (seen once on a loaded CI host) fails that one publish
    with the reason, and the next one (the topic checked again) returns: never more than one failure."""
    from funboost_kafka import KafkaPublishError

    server, b = private_kafka
    b.publish(msgs(1, prefix="before_"))
    server.kill()
    server.start()  # in-memory storage: the topic is gone too
    outcomes = []
    for _ in range(3):
        try:
            b.publish(msgs(1, prefix="after_"))
            outcomes.append("ok")
            break
        except KafkaPublishError as exc:
            assert "was not acknowledged within 5.0s" in str(exc) or "could not take the message" in str(exc), exc
            outcomes.append("error")
    assert outcomes in (["ok"], ["error", "ok"]), outcomes
    got = []
    wait_for(lambda: got.extend(d.task_id for d in b.fetch(10, 0.5)) or "after_0" in got, deadline_s=30,
             what="the message published after the restart consumed")


def test_publish_recovers_when_the_producer_learns_first_that_the_topic_is_gone(private_kafka):
    """CI (kafka environment): after a broker restart, the producer's metadata refresh reached the restarted
    broker before its queued batch did. The refreshed metadata no longer listed the topic, so the batch waited
    for a partition leader, no produce error came (so no lost producer id either), and the first publish failed
    at publish_timeout. The publish now notices the topic gone and resends from a new producer once the topic
    is there again.

    That order is forced here on a running broker: the batch is held in the producer (its accumulator reports
    nothing ready) while the topic is deleted and the producer's metadata drops it. (A first version restarted
    the broker and failed once on CI: the producer's metadata refresh recreated the topic, see below.)"""
    from funboost_kafka import KafkaPublishError

    server, b = private_kafka
    b.publish(msgs(1, prefix="before_"))
    producer = b._producer
    batch_may_leave = threading.Event()
    ready = producer._accumulator.ready

    def held_ready(cluster, now=None):
        if not batch_may_leave.is_set():
            return set(), 0.02, False  # nothing ready to send yet: look again in 20 ms
        return ready(cluster, now=now)

    producer._accumulator.ready = held_ready
    # A producer that asked for the topic by name (its first send came before its first metadata answer,
    # as on a loaded CI host) kept asking for it with auto-creation allowed: the broker created the topic
    # again on the next refresh, and the metadata never dropped it. funboost's clients no longer allow that.
    producer._metadata.add_topic(b.topic)
    confirm = b.publish_begin(msgs(1, prefix="after_"))  # queued for a partition of the topic as it was
    admin = KafkaAdminClient(bootstrap_servers=server.url)
    try:
        admin.delete_topics([b.topic])
    finally:
        admin.close()

    def metadata_dropped_the_topic() -> bool:
        producer._metadata.request_update()
        return producer._metadata.partitions_for_topic(b.topic) is None

    wait_for(metadata_dropped_the_topic, deadline_s=20, what="the producer's metadata drops the topic")
    batch_may_leave.set()
    try:
        confirm()
    except KafkaPublishError as exc:
        pytest.fail(f"the publish failed while its topic was gone: {exc}")
    got = []
    wait_for(lambda: got.extend(d.task_id for d in b.fetch(10, 0.5)) or "after_0" in got, deadline_s=30,
             what="the message published after the topic was deleted consumed")


def test_consumer_reads_a_recreated_topic_from_its_start(private_kafka):
    """CI (reliability, broker restart, kafka): after the test broker came back empty, a consumer never
    resumed: its positions still pointed into the old log (tens of records per partition), the new log was
    shorter, and this broker answers a fetch beyond the end with nothing rather than OFFSET_OUT_OF_RANGE.
    (On Kafka, a position below the new end would skip the new records before it.) The consumer now sees
    the topic's new id and starts the partitions again from the beginning (auto_offset_reset)."""
    server, b = private_kafka
    b.publish(msgs(60, prefix="before_"))
    got = fetch_until(b, 60)
    b.ack(got)
    server.kill()
    server.start()  # in-memory storage: the topic comes back empty, with a new id
    after = msgs(6, prefix="after_")
    deadline = time.monotonic() + 60
    while True:  # the first publishes after the restart may time out while the producer reconnects
        try:
            b.publish(after)
            break
        except Exception:  # noqa: BLE001 - retried until the deadline
            assert time.monotonic() < deadline, "could not publish after the restart"
    _consume_until_seen(b, after, "the records published after the restart")


def test_the_commit_of_revoked_partitions_is_answered_before_the_listener_returns(queue_name, monkeypatch):
    """The recreated-topic test took 18 s instead of 4–7 under load, and once in CI a minute: the commit of
    revoked partitions, sent without waiting, was answered UNKNOWN_MEMBER_ID while the JoinGroup sent under
    the old member id was in flight; kafka-python reset its member id, discarded the join the broker had
    accepted and joined again, and the group then waited for the member it had left behind. The listener now
    awaits the commit (kafka-python runs the coroutine on its I/O loop before it sends JoinGroup). Driven by
    hand here: the coroutine must not finish before the commit's future is answered."""
    from kafka.future import Future

    from funboost_kafka import broker as broker_module

    if broker_module._AsyncListener is None:
        pytest.skip("this kafka-python cannot await a rebalance listener")
    b = KafkaBroker(queue_name, make_options())
    answer = Future()  # the commit's, as kafka-python's commit_async returns it
    calls = []

    def on_revoked(revoked, commit: bool):
        calls.append((revoked, commit))
        return answer if commit else None

    monkeypatch.setattr(b, "_on_revoked", on_revoked)
    b._commit_future = earlier = Future()  # a fetch's commit, still unanswered
    listener = broker_module._listener_class(b)
    tp = TopicPartition(queue_name, 0)
    revoking = listener.on_partitions_revoked({tp})
    revoking.send(None)  # runs up to the await of the earlier commit's answer
    assert calls == [([tp], True)]
    earlier.success(None)
    revoking.send(None)  # now waits for the revoked partitions' commit
    answer.failure(Exception("UNKNOWN_MEMBER_ID"))  # a refused commit ends the wait too (records read again)
    with pytest.raises(StopIteration):
        revoking.send(None)

    lost = listener.on_partitions_lost({tp})  # no commit for lost partitions: nothing to wait for
    with pytest.raises(StopIteration):
        lost.send(None)
    assert calls[-1] == ([tp], False)


def _consume_until_seen(b: KafkaBroker, sent: list, what: str) -> None:
    """Fetch and ack until every message of ``sent`` was handed out (60 s); on failure, say where the consumer
    stood (the recreated-topic test failed once in CI, not reproduced locally)."""
    seen: set = set()

    def all_consumed() -> bool:
        batch = b.fetch(10, 0.5)
        seen.update(d.task_id for d in batch)
        b.ack(batch)
        return {m.task_id for m in sent} <= seen

    try:
        wait_for(all_consumed, deadline_s=60, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (got {sorted(seen)}); consumer state: {_consumer_state(b)}") from None


def _consumer_state(b: KafkaBroker) -> str:
    c = b._consumer
    if c is None:
        return "no consumer"
    try:
        tps = sorted(c.assignment(), key=lambda tp: tp.partition)
        return (f"topic id seen {b._topic_id!r}, now {c._client.cluster.topic_id(b.topic)!r}; group "
                f"{getattr(c.group_metadata(), 'state', '?')}; positions "
                f"{ {tp.partition: c.position(tp, timeout_ms=2000) for tp in tps} }; committed "
                f"{ {tp.partition: c.committed(tp) for tp in tps} }; ends "
                f"{ {tp.partition: off for tp, off in c.end_offsets(tps).items()} }")
    except Exception as exc:  # noqa: BLE001 - a diagnostic only
        return f"unavailable ({exc!r})"


def test_the_topic_check_of_a_publish_waits_out_a_node_not_ready_and_ends_in_a_publish_error(queue_name,
                                                                                            monkeypatch):
    """CI: after a broker restart, the resend from a new producer checked the topic once and raised
    kafka-python's NodeNotReadyError (its admin connection was still backing off) out of ``publish``. Every
    topic check of a publish now retries retriable errors until the publish deadline, then raises
    KafkaPublishError. (No server needed: the check itself is replaced.)"""
    from kafka.errors import NodeNotReadyError, UnknownError

    from funboost_kafka import KafkaPublishError

    b = KafkaBroker(queue_name, make_options())
    calls = []

    def flaky(deadline=None) -> None:  # the deadline bounds a new admin client's bootstrap
        calls.append(1)
        if len(calls) < 3:
            raise NodeNotReadyError(111)

    monkeypatch.setattr(b, "_ensure_topic", flaky)
    b._ensure_topic_within(time.monotonic() + 5)
    assert len(calls) == 3

    monkeypatch.setattr(b, "_ensure_topic", lambda deadline=None: (_ for _ in ()).throw(NodeNotReadyError(111)))
    started = time.monotonic()
    with pytest.raises(KafkaPublishError, match="could not check the topic: NodeNotReadyError"):
        b._ensure_topic_within(time.monotonic() + 0.5)
    assert time.monotonic() - started >= 0.5

    monkeypatch.setattr(b, "_ensure_topic", lambda deadline=None: (_ for _ in ()).throw(UnknownError("not retriable")))
    with pytest.raises(KafkaPublishError, match="UnknownError"):
        b._ensure_topic_within(time.monotonic() + 30)  # at once: not retriable


def test_publish_to_a_missing_topic_with_auto_create_off_fails_clearly_and_creates_nothing(brokers, queue_name):
    """With ``auto_create_topic=False`` the topic is the user's to create. kafka-python's producer asked the
    broker for the missing topic's metadata with auto-creation allowed (kafka-python 3.0 drops its
    ``allow_auto_create_topics`` option), so the broker created it with its own partition count and the
    publish went through. Now nothing creates it, and the publish ends in KafkaPublishError within
    ``publish_timeout`` (kafka-python's send() used to block for its own 60 s)."""
    from funboost_kafka import KafkaPublishError

    b = brokers(queue_name, auto_create_topic=False, publish_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(KafkaPublishError, match="auto_create_topic is off: create the topic first"):
        b.publish(msgs(1))
    assert time.monotonic() - started < 10
    admin = KafkaAdminClient(**b.options.connection_kwargs())
    try:
        assert queue_name not in admin.list_topics()
    finally:
        admin.close()


def test_purge_through_another_instance_of_the_consuming_process(brokers, queue_name):
    """Audit: ``booster.clear()`` purges through the booster's publishing instance while the engine consumes
    through another one; that instance had no consumer, so it asked the admin API, which Kafka refuses for a
    group with an active member (``UnknownMemberIdError``), although the only member was in this process.
    The purge now moves the partitions of every consuming instance of the group in the process through
    their own consumers."""
    consumer, publisher = brokers(queue_name), brokers(queue_name)
    publisher.publish(msgs(1, prefix="warm"))
    consumer.ack(fetch_until(consumer, 1))  # joined: the group's only member
    publisher.publish(msgs(7))
    assert publisher.purge() == 7
    assert publisher.queue_size().ready == 0
    assert consumer.fetch(10, 0.5) == []  # moved to the end through the member's consumer
    publisher.publish(msgs(2, prefix="after"))
    assert sorted(d.task_id for d in fetch_until(consumer, 2)) == ["after0", "after1"]


def test_clear_while_the_same_process_consumes(queue_name, kafka_available):
    """The audit's case through the engine: ``f.clear()`` in the process that runs ``f.consume()``."""
    from funboost import BoosterParams, boost

    from conftest import TEST_OPTIONS

    release = threading.Event()
    ran: list[int] = []

    @boost(BoosterParams(queue_name=queue_name, broker_kind="KAFKA", broker_exclusive_config=dict(TEST_OPTIONS),
                         concurrent_num=2, state_backend="memory", log_to_console=False))
    def f(x: int) -> None:
        ran.append(x)
        if x < 0:
            release.wait(60)  # keeps a worker busy, as a long task would

    try:
        f.push(-1)
        f.consume()
        wait_for(lambda: -1 in ran, deadline_s=45, what="the consumer joined and runs the first task")
        for i in range(20):
            f.push(i)
        assert f.clear() >= 1  # what the engine had fetched before is its own (at-least-once)
        assert f.get_message_count() == 0
        release.set()
        f.push(100)
        wait_for(lambda: 100 in ran, deadline_s=30, what="a task pushed after the clear runs")
    finally:
        release.set()
        f.stop_consume(10)
        f.broker.close()


@pytest.mark.parametrize("auto_create_topic", [True, False])
def test_publish_to_unreachable_brokers_ends_at_publish_timeout(queue_name, auto_create_topic):
    """Audit: with the cluster unreachable a publish raised after 30 s whatever its publish_timeout:
    kafka-python's admin client (topic check) and producer bootstrap for 30 s in their constructors. A
    failed admin bootstrap also left the admin's I/O thread running, one more per publish."""
    from funboost_kafka import KafkaPublishError
    from funboost_kafka.broker import _shared

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    b = KafkaBroker(queue_name, make_options(bootstrap_servers=server, publish_timeout=1.5,
                                             auto_create_topic=auto_create_topic))
    threads_before = threading.active_count()
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(KafkaPublishError, match=f"on \\['{server}'\\].*Unable to bootstrap"):
                b.publish(msgs(1))
            assert time.monotonic() - started < 1.5 + 1.5
        wait_for(lambda: threading.active_count() <= threads_before, deadline_s=10,
                 what="no client thread left behind by the failed publishes")
    finally:
        b.close()
        _shared.close_connection(b.options)


def test_requeued_message_keeps_its_key_and_partition(kafka_available, queue_name):
    """ExceptionForRequeue re-produces the message through the engine: it must keep its key, so it lands in
    the same partition (docs/brokers/kafka.md, "Requeue ... same key, so same partition")."""
    from kafka import KafkaConsumer
    from funboost import BoosterParams, ExceptionForRequeue, TaskOptions, boost

    seen: dict[int, int] = {}

    @boost(BoosterParams(queue_name=queue_name, broker_kind="kafka", concurrent_num=2,
                         broker_exclusive_config={**make_options(num_partitions=6).model_dump(exclude_unset=True)}))
    def f(i):
        seen[i] = seen.get(i, 0) + 1
        if seen[i] == 1:
            raise ExceptionForRequeue("again")

    for i in range(6):
        f.publish({"i": i}, task_options=TaskOptions(key="same-key"))
    f.consume()
    try:
        wait_until(lambda: len(seen) == 6 and all(v >= 2 for v in seen.values()), 60, message=f"requeued runs: {seen}")
    finally:
        f.stop_consume(10)
    c = KafkaConsumer(bootstrap_servers=make_options().servers(), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(queue_name, p) for p in range(6)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        recs = []
        end = time.time() + 10
        while time.time() < end and len(recs) < 12:
            for tp, rs in c.poll(timeout_ms=500).items():
                recs.extend((tp.partition, r.key) for r in rs)
    finally:
        c.close()
    assert len(recs) == 12
    assert {key for _, key in recs} == {b"same-key"}
    assert len({p for p, _ in recs}) == 1


def test_an_oversized_message_fails_alone(brokers, queue_name):
    """kafka-python refuses a record above max_request_size in send(), after the batch's earlier records were
    queued: the batch failed, was retried (those sent twice) and the later ones never went, all reported
    failed with the big one's error. Now nothing of the batch is sent and only the big one fails."""
    from funboost import BoosterParams, MessagesRefused, boost
    from funboost.plugins.broker import OutgoingMessage
    from funboost.publishing import PublishFailed

    b = brokers(queue_name)
    small = [OutgoingMessage(body='{"x": %d}' % i, task_id=f"s{i}") for i in range(3)]
    big = OutgoingMessage(body='{"x": "%s"}' % ("y" * 2_000_000), task_id="big")
    with pytest.raises(MessagesRefused) as info:
        b.publish([small[0], big, small[1]])
    assert info.value.indexes == (1,) and "big" in str(info.value)
    assert b.queue_size().ready == 0  # nothing of the batch went

    @boost(BoosterParams(queue_name=queue_name, broker_kind="kafka", publish_mode="pipelined",
                         broker_exclusive_config=make_options().model_dump(exclude_unset=True),
                         state_backend="memory", log_to_console=False))
    def f(x):
        return x

    for i in range(50):
        f.push(i)
    f.push("y" * 2_000_000)
    for i in range(50, 100):
        f.push(i)
    with pytest.raises(PublishFailed) as failed:
        f.flush()
    assert failed.value.count == 1
    wait_until(lambda: b.queue_size().ready == 100, 20, message=f"100 stored once: {b.queue_size()}")



def test_a_committed_offset_beyond_the_end_of_the_log_starts_again_from_the_beginning(brokers, queue_name):
    """What the recreated-topic test above met once in CI: the group's committed offset pointed beyond the
    end of a log that a restarted test broker had lost (a commit of the old log reaching the new broker).
    Kafka answers such a fetch with OFFSET_OUT_OF_RANGE and the client resets; Tansu answers with nothing,
    and the consumer waited for ever. The consumer now resets a position beyond the partition's high
    watermark by auto_offset_reset (earliest)."""
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    b = brokers(queue_name)
    sent = msgs(6)
    b.publish(sent)
    stale = KafkaConsumer(bootstrap_servers=b.options.servers(), group_id=b.group_id,
                          enable_auto_commit=False)
    try:
        tps = [TopicPartition(b.topic, p) for p in stale.partitions_for_topic(b.topic)]
        stale.assign(tps)
        stale.commit({tp: OffsetAndMetadata(50, "", -1) for tp in tps})
        assert all(stale.committed(tp) == 50 for tp in tps)
    finally:
        stale.close()
    _consume_until_seen(b, sent, "the records below the stale committed offset")


def test_a_burst_of_failed_commits_during_an_outage_logs_one_warning(queue_name, caplog):
    """While the broker was down (2 s in the broker-restart test) every fetch's async commit failed and
    logged a warning: 45 lines in 2 s, a few thousand for a minute's outage. One line per 10 s now, the
    next one counting what it left out; the partitions still commit again on the next fetch."""
    from kafka.errors import NodeNotReadyError

    b = KafkaBroker(queue_name, make_options())
    tp = TopicPartition(queue_name, 0)
    with caplog.at_level("WARNING", logger="funboost.kafka"):
        for _ in range(45):
            b._on_commit_done({tp: None}, NodeNotReadyError("coordinator"))
    lines = [r.getMessage() for r in caplog.records if "commit failed" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "NodeNotReadyError" in lines[0] and "records will be redelivered" in lines[0]


def _thread_cpu_seconds(name: str) -> float:
    """CPU time so far of this process's thread called ``name`` (Linux /proc)."""
    import os
    ids = [t.native_id for t in threading.enumerate() if t.name == name]
    assert ids, f"no thread {name!r}"
    fields = open(f"/proc/self/task/{ids[0]}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/task"), reason="reads thread CPU from /proc")
def test_a_producer_of_two_queues_stays_idle_after_publishing(brokers, queue_name):
    """A producer started when its first topic already existed learnt that topic from its first metadata
    answer (the test broker lists every topic there) and kafka-python never added it to the topics its
    refreshes ask for: the refresh after a publish to a second queue dropped it, and the producer's sender
    thread, seeing batch slots without a known leader, spun at 100 % of a core from then on (the whole
    contract run, on CI's shared cores). Every topic a producer sends to is now tracked."""
    from funboost_kafka.broker import _shared

    first = brokers(queue_name)
    first._ensure_topic()  # the topic exists before this test's producer starts (a new connection key below)
    own = {"client_id": f"fbk-idle-{uuid.uuid4().hex[:8]}"}
    a = brokers(queue_name, producer_config=own)
    b = brokers(queue_name + "_b", producer_config=own)
    a.publish(msgs(1))
    b.publish(msgs(1))
    producer = _shared.producer(a.options)
    assert producer is _shared.producer(b.options)
    # the refresh that follows the second topic's first send (the one that dropped the first topic) is back
    wait_until(lambda: producer._metadata.partitions_for_topic(b.topic) is not None, 10,
               message="the producer's metadata refresh")
    name = next(t.name for t in threading.enumerate() if own["client_id"] in t.name)  # its sender thread
    before = _thread_cpu_seconds(name)
    time.sleep(2.0)  # an absence (of spinning) is watched over a window
    used = _thread_cpu_seconds(name) - before
    assert used < 0.5, f"the idle producer's sender thread used {used:.2f} s of CPU in 2 s (spinning)"
