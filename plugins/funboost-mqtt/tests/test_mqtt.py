"""MQTT beyond the contract, on the real Mosquitto: the shared group splits the work, publishes made
before any consumer are not lost, a stopping consumer hands back what it buffered, and what happens to
a SIGKILLed consumer's in-flight QoS 1 messages (the facts behind ``at_least_once=False``)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until
from funboost_mqtt import MqttBroadcastBroker, MqttBroker, MqttOptions


def env(i: int) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")


def numbers(ds) -> list[int]:
    return sorted(json.loads(d.body)["i"] for d in ds)


@pytest.fixture
def make(mqtt_options, qname):
    made: list[MqttBroker] = []

    def make_broker(cls=MqttBroker, **opts) -> MqttBroker:
        b = cls(qname, MqttOptions(**{**mqtt_options.model_dump(), **opts}))
        made.append(b)
        return b
    yield make_broker
    for b in made:
        b.close()


def drain(b: MqttBroker, quiet: float = 0.5) -> list:
    """Everything ``b`` receives until nothing came for ``quiet`` seconds (acked)."""
    out = []
    while True:
        got = b.fetch(100, quiet)
        if not got:
            return out
        b.ack(got)
        out += got


def test_shared_group_splits_the_work(make):
    a, b, pub = make(), make(), make()
    a.fetch(1, 0.05)
    b.fetch(1, 0.05)
    pub.publish([env(i) for i in range(100)])
    got_a, got_b = drain(a), drain(b)
    assert numbers(got_a + got_b) == list(range(100))  # each message to exactly one member
    assert got_a and got_b


def test_publish_before_any_consumer_is_parked_not_lost(make):
    pub, late = make(), make()
    pub.publish([env(i) for i in range(5)])  # PUBACK "no matching subscribers": parked
    got = fetch_until(late, 5, timeout=20)
    assert numbers(got) == list(range(5))
    late.ack(got)


def test_broadcast_drops_what_nobody_hears(make):
    pub, late = make(MqttBroadcastBroker), make(MqttBroadcastBroker)
    pub.publish([env(1)])
    late.fetch(1, 0.05)
    assert late.fetch(1, 0.5) == []
    pub.publish([env(2)])
    assert numbers(fetch_until(late, 1)) == [2]


def test_stopping_consumer_hands_back_what_it_buffered(make):
    a, b, pub = make(receive_maximum=50), make(), make()
    a.fetch(1, 0.05)
    b.fetch(1, 0.05)
    pub.publish([env(i) for i in range(60)])
    ran_by_a = fetch_until(a, 3)  # a takes 3 and buffers more of its share
    a.ack(ran_by_a)
    a.close()  # unsubscribes, republishes its unrun buffer, ends its session
    rest = drain(b, quiet=1.0)
    assert numbers(ran_by_a + rest) == list(range(60))


def test_broadcast_requeue_and_stop_give_the_other_subscribers_no_extra_copies(make):
    """A broadcast subscriber's copy is its own: a requeue goes back to it alone, and what it buffered when
    it stops is dropped, not published again to everyone."""
    a, b, pub = make(MqttBroadcastBroker), make(MqttBroadcastBroker), make(MqttBroadcastBroker)
    a.fetch(1, 0.05)
    b.fetch(1, 0.05)
    pub.publish([env(i) for i in range(10)])
    first = fetch_until(a, 1)
    a.requeue(first)  # e.g. ExceptionForRequeue
    again = fetch_until(a, 10)  # the other 9, then the requeued one again, from a's own buffer
    assert numbers(again) == list(range(10))
    a.ack(again[:5])
    a.requeue(again[5:])  # the engine hands back what it prefetched when it stops, then closes
    a.close()
    assert numbers(drain(b, quiet=1.0)) == list(range(10)), "b got a copy more or less than one of each"


KILLED_CONSUMER = textwrap.dedent("""
    import json, os, signal, sys, time
    from funboost_mqtt import MqttBroker, MqttOptions
    queue, client_id = sys.argv[1], sys.argv[2]
    b = MqttBroker(queue, MqttOptions(client_id=client_id or None))
    b.fetch(1, 0.05)
    print("subscribed", flush=True)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 4 and time.monotonic() < deadline:
        got += b.fetch(4 - len(got), 1.0)
    print(json.dumps(sorted(json.loads(d.body)["i"] for d in got)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # holding them, unacknowledged
""")


def run_killed_consumer(queue: str, client_id: str, publish) -> list[int]:
    p = subprocess.Popen([sys.executable, "-c", KILLED_CONSUMER, queue, client_id], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "subscribed"
    publish()
    held = json.loads(p.stdout.readline())
    assert p.wait(30) == -9
    return held


def test_sigkilled_consumer_messages_wait_for_its_client_id(make, qname):
    """Mosquitto keeps a killed consumer's session: the QoS 1 messages it held (and the share of new
    ones routed to its offline session) reach no other member of the group; a client that reconnects
    with the same id gets them all. This is why MQTT declares at_least_once=False by default and why
    a stable client_id per consumer restores it."""
    pub, other = make(), make()
    other.fetch(1, 0.05)  # a second member of the group, alive throughout
    client_id = f"funboost-test-{qname}"
    held = run_killed_consumer(qname, client_id, lambda: pub.publish([env(i) for i in range(10)]))
    assert len(held) == 4
    pub.publish([env(i) for i in range(10, 20)])  # published while the dead session still exists
    seen_by_other = numbers(drain(other, quiet=1.5))
    assert not set(held) & set(seen_by_other)  # the held messages did not come to the other member
    missing = sorted(set(range(20)) - set(seen_by_other))
    assert set(held) <= set(missing)
    # the killed consumer "restarts" with its stable client id: its session, and all it had, come back
    restarted = make(client_id=client_id)
    got_back = fetch_until(restarted, len(missing), timeout=20)
    restarted.ack(got_back)
    back = numbers(got_back)
    assert sorted(set(back)) == missing
    assert sorted(set(seen_by_other) | set(back)) == list(range(20))


def test_broker_queue_limit_drops_qos1_messages_for_a_lagging_consumer(make):
    """Mosquitto's default max_queued_messages (1000 per client beyond the in-flight window) drops QoS 1
    messages for a consumer that falls behind: one more reason MQTT does not claim at-least-once."""
    slow, pub = make(receive_maximum=1), make()
    slow.fetch(1, 0.05)  # subscribed; takes nothing more
    n = 1300
    pub.publish([env(i) for i in range(n)])  # every PUBACK said "stored"
    got = drain(slow, quiet=1.0)
    assert len(got) < n, "the broker kept everything: revisit docs/brokers/mqtt.md"
    print(f"\nMosquitto delivered {len(got)} of {n} to a consumer that lagged")


def test_check_available_gives_a_reason_when_unreachable():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    reason = MqttBroker.check_available(MqttOptions(port=port, connect_timeout=0.5))
    assert reason and "not reachable" in reason


def test_an_unreachable_broker_is_named_in_the_error(qname):
    """push / consume() to a port nothing listens on raised a bare "[Errno 111] Connection refused"."""
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=qname, broker_kind="MQTT", log_to_console=False, state_backend="memory",
                         broker_exclusive_config={"port": 1999, "publish_timeout": 3}))
    def f(x):
        return x

    for action in (lambda: f.push(1), f.consume):
        with pytest.raises(ConnectionError, match="MQTT broker 127.0.0.1:1999: cannot connect"):
            action()
