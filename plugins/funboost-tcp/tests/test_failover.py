"""Several consumers (real engine, each in a subprocess): round robin, failover when one is SIGKILLed,
a call in flight on a killed consumer, revival."""
import json
import threading
import time

import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import wait_until

from funboost_tcp import NoConsumerAvailable, TcpBroker, TcpBrokerError
from support import ConsumerProcess, free_port


@pytest.fixture
def two_consumers(queue_name):
    procs = [ConsumerProcess(queue_name, free_port()), ConsumerProcess(queue_name, free_port())]
    yield procs
    for proc in procs:
        proc.kill()


def test_round_robin_then_failover_after_kill(two_consumers, queue_name):
    a, b = two_consumers
    pub = TcpBroker(queue_name, TcpBroker.parse_options(
        {"addresses": [a.address, b.address], "publish_timeout": 5, "health_check_interval": 0.1}))
    pids = {pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"] for i in range(6)}
    assert pids == {a.pid, b.pid}  # balanced across both
    assert pub.health() == {a.address: "SERVING", b.address: "SERVING"}

    a.kill()
    # every call still succeeds, on the survivor (a call never sent to a dead consumer is retried elsewhere)
    results = []
    for i in range(10):
        try:
            results.append(pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"])
        except TcpBrokerError as e:
            # the one call whose connection to the killed consumer broke mid-request is surfaced, not re-run
            assert e.code == "UNAVAILABLE" and "connection lost" in str(e)
    assert set(results) == {b.pid} and len(results) >= 9
    for i in range(10):  # fire-and-forget pushes fail over too
        pub.publish([OutgoingMessage(body=json.dumps({"x": i}))])
    health = pub.health()
    assert health[a.address] == "UNREACHABLE" and health[b.address] == "SERVING"


def test_revived_consumer_is_used_again(queue_name):
    port_a = free_port()
    a = ConsumerProcess(queue_name, port_a)
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = TcpBroker(queue_name, TcpBroker.parse_options(
            {"addresses": [a.address, b.address], "health_check_interval": 0.1}))
        assert pub.sync_call(json.dumps({"x": 1}), timeout=10)["doubled"] == 2  # connections open
        a.kill()
        for i in range(4):
            try:
                assert pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"] == b.pid
            except TcpBrokerError as e:  # the broken connection to a, noticed by this call
                assert e.code == "UNAVAILABLE"
        a = ConsumerProcess(queue_name, port_a)  # same address, new process
        assert wait_until(lambda: pub.sync_call(json.dumps({"x": 1}), timeout=10)["pid"] == a.pid, 20)
    finally:
        a.kill()
        b.kill()


def test_all_consumers_dead(queue_name):
    a = ConsumerProcess(queue_name, free_port())
    pub = TcpBroker(queue_name, TcpBroker.parse_options({"addresses": [a.address], "publish_timeout": 0.5}))
    assert pub.sync_call('{"x": 2}', timeout=10)["doubled"] == 4
    a.kill()
    with pytest.raises(NoConsumerAvailable) as e:
        pub.publish([OutgoingMessage(body='{"x": 1}')])
    assert a.address in str(e.value)
    with pytest.raises(TcpBrokerError):
        pub.sync_call('{"x": 1}', timeout=2)


def test_server_killed_mid_call_fails_the_caller_within_its_timeout(queue_name):
    """A call the consumer took, then died on, is not silently re-run elsewhere: the caller is told at
    once (the connection broke), well within its timeout."""
    a = ConsumerProcess(queue_name, free_port())
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = TcpBroker(queue_name, TcpBroker.parse_options({"addresses": [a.address, b.address]}))
        pub.sync_call(json.dumps({"x": 1}), timeout=10)  # both connections up: the next goes to one of them
        pub.sync_call(json.dumps({"x": 1}), timeout=10)
        # the warm-up calls are settled (acked) on both consumers before the call under test starts
        wait_until(lambda: not any(_in_flight(queue_name, c.address) for c in (a, b)), 15, message="warm-up settled")
        out = {}

        def call() -> None:
            t0 = time.monotonic()
            try:
                out["r"] = pub.sync_call(json.dumps({"sleep": 30}), timeout=20)
            except Exception as e:  # noqa: BLE001 - inspected below
                out["e"] = e
            out["took"] = time.monotonic() - t0

        t = threading.Thread(target=call)
        t.start()
        # wait until one consumer is running it (its buffer shows it in flight)
        victim = wait_until(lambda: next((c for c in (a, b) if _in_flight(queue_name, c.address)), None), 15,
                            message="a consumer took the call")
        victim.kill()
        t.join(25)
        assert not t.is_alive()
        assert isinstance(out.get("e"), TcpBrokerError) and out["e"].code == "UNAVAILABLE", (out, repr(out.get("e")))
        assert out["took"] < 20
    finally:
        a.kill()
        b.kill()


def _in_flight(queue_name: str, address: str) -> bool:
    size = TcpBroker(queue_name, TcpBroker.parse_options({"addresses": [address]})).queue_size()
    return bool(size.in_flight)


def test_single_address_sync_call_retries_until_a_consumer_serves(queue_name):
    port = free_port()
    pub = TcpBroker(queue_name, TcpBroker.parse_options(
        {"addresses": [f"127.0.0.1:{port}"], "publish_timeout": 60, "health_check_interval": 0.1}))
    out: dict = {}

    def call() -> None:
        try:
            out["r"] = pub.sync_call('{"x": 3}', timeout=60)
        except Exception as e:  # noqa: BLE001 - inspected below
            out["e"] = e

    t = threading.Thread(target=call)
    t.start()
    ep = pub.client.endpoints[0]
    a = None
    try:
        assert wait_until(lambda: ep.down_until > 0 or not t.is_alive(), 10)  # the first attempt was refused
        a = ConsumerProcess(queue_name, port)
        t.join(60)
        assert not t.is_alive()
        assert out.get("r", {}).get("doubled") == 6, out
    finally:
        if a is not None:
            a.kill()
        t.join(65)
