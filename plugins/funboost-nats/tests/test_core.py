"""NATS_CORE beyond the contract: sync_call over request-reply, a queue group spreading messages over
its members, confirmed publishes waiting for a member, and the honest fire-and-forget mode."""
from __future__ import annotations

import json
import threading

import pytest

from funboost import BoosterParams, RemoteTaskError, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until
from funboost_nats import CoreOptions, NatsCoreBroker


def env(i: int) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")


@pytest.fixture
def make(nats_url, qname):
    made: list[NatsCoreBroker] = []

    def make_broker(**opts) -> NatsCoreBroker:
        b = NatsCoreBroker(qname, CoreOptions(url=nats_url, **opts))
        made.append(b)
        return b
    yield make_broker
    for b in made:
        b.close()


def test_sync_call_returns_the_result_or_raises_the_remote_error(nats_url, qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="NATS_CORE", broker_exclusive_config={"url": nats_url},
                         concurrent_num=4, state_backend="memory", log_to_console=False, max_retry_times=0))
    def div(a: int, b: int) -> float:
        return a / b

    try:
        div.consume()
        assert div.sync_call(6, 3, timeout=20) == 2.0
        with pytest.raises(RemoteTaskError) as err:
            div.sync_call(1, 0, timeout=20)
        assert err.value.exception_type == "ZeroDivisionError"
        results: list[float] = []
        threads = [threading.Thread(target=lambda k=k: results.append(div.sync_call(k, 1, timeout=20)))
                   for k in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [float(k) for k in range(10)]
    finally:
        div.stop_consume(10)


def test_sync_call_without_consumer_times_out(make):
    b = make()
    with pytest.raises(TimeoutError):
        b.sync_call(json.dumps({"x": 1, "extra": {"task_id": "a"}}), 0.5)


def test_queue_group_spreads_messages_over_members(make):
    a, b, pub = make(), make(), make()
    a.fetch(1, 0.05)
    b.fetch(1, 0.05)  # both joined
    pub.publish([env(i) for i in range(200)])
    got_a, got_b = a.fetch(200, 0.5), b.fetch(200, 0.5)
    seen = [json.loads(d.body)["i"] for d in got_a + got_b]
    assert sorted(seen) == list(range(200))  # each message to exactly one member
    assert got_a and got_b  # the group spreads them


def test_confirmed_publish_waits_for_a_member(make):
    pub, late = make(), make()
    pub.publish([env(i) for i in range(5)])  # nobody listens yet: parked, offered again
    got = fetch_until(late, 5, timeout=20)  # joining the group receives them
    assert sorted(json.loads(d.body)["i"] for d in got) == list(range(5))


def test_fire_and_forget_drops_what_nobody_hears(make):
    pub, late = make(confirm_publish=False), make(confirm_publish=False)
    pub.publish([env(1)])  # no member: gone (honest at-most-once)
    late.fetch(1, 0.05)
    assert late.fetch(1, 0.5) == []
    pub.publish([env(2)])
    [d] = fetch_until(late, 1)
    assert json.loads(d.body)["i"] == 2


def test_queue_size_is_unknown_never_zero(make):
    assert make().queue_size().ready is None


def test_requeue_goes_back_to_the_local_buffer(make):
    b = make()
    b.fetch(1, 0.05)
    b.publish([env(1), env(2)])
    first = fetch_until(b, 2)
    b.requeue(first)
    again = fetch_until(b, 2)
    assert [json.loads(d.body)["i"] for d in again] == [json.loads(d.body)["i"] for d in first]
    b.ack(again)
    assert b.purge() == 0


def test_check_available_gives_a_reason_when_unreachable():
    import socket

    from funboost_nats import JetStreamOptions, NatsJetStreamBroker
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    assert "not reachable" in NatsCoreBroker.check_available(CoreOptions(url=url, connect_timeout=0.5))
    assert "not reachable" in NatsJetStreamBroker.check_available(JetStreamOptions(url=url, connect_timeout=0.5))
