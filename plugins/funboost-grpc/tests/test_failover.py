"""Several consumers: round robin, failover when one is SIGKILLed, health-based skipping."""
import json
import time

import pytest

from funboost_grpc import GrpcBroker, NoConsumerAvailable
from funboost_grpc.errors import GrpcBrokerError
from funboost.plugins.broker import OutgoingMessage
from support import ConsumerProcess, free_port, wait_until


@pytest.fixture
def two_consumers(queue_name):
    procs = [ConsumerProcess(queue_name, free_port()), ConsumerProcess(queue_name, free_port())]
    yield procs
    for p in procs:
        p.kill()


def test_round_robin_then_failover_after_kill(two_consumers, queue_name):
    a, b = two_consumers
    pub = GrpcBroker(queue_name, GrpcBroker.parse_options(
        {"addresses": [a.address, b.address], "publish_timeout": 5, "health_check_interval": 0.1}))
    pids = {pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"] for i in range(6)}
    assert pids == {a.pid, b.pid}  # balanced across both
    assert pub.health() == {a.address: "SERVING", b.address: "SERVING"}

    a.kill()
    # every call still succeeds, on the survivor
    pids = [pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"] for i in range(10)]
    assert set(pids) == {b.pid}
    for i in range(10):  # fire-and-forget pushes fail over too
        pub.publish([OutgoingMessage(body=json.dumps({"x": i}))])
    health = pub.health()
    assert health[a.address] == "UNREACHABLE" and health[b.address] == "SERVING"
    # the dead address is skipped (marked down) rather than tried first every other call
    t0 = time.perf_counter()
    for i in range(20):
        pub.sync_call(json.dumps({"x": i}), timeout=10)
    assert time.perf_counter() - t0 < 10


def test_revived_consumer_is_used_again(queue_name):
    port_a = free_port()
    a = ConsumerProcess(queue_name, port_a)
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = GrpcBroker(queue_name, GrpcBroker.parse_options(
            {"addresses": [a.address, b.address], "health_check_interval": 0.1}))
        a.kill()
        for i in range(4):
            assert pub.sync_call(json.dumps({"x": i}), timeout=10)["pid"] == b.pid
        a = ConsumerProcess(queue_name, port_a)  # same address, new process
        # the health prober sees it SERVING again and round robin includes it
        assert wait_until(lambda: pub.sync_call(json.dumps({"x": 1}), timeout=10)["pid"] == a.pid, 10)
    finally:
        a.kill()
        b.kill()


def test_all_consumers_dead(queue_name):
    a = ConsumerProcess(queue_name, free_port())
    pub = GrpcBroker(queue_name, GrpcBroker.parse_options({"addresses": [a.address], "publish_timeout": 0.5}))
    assert pub.sync_call('{"x": 2}', timeout=10)["doubled"] == 4
    a.kill()
    with pytest.raises(NoConsumerAvailable):
        pub.publish([OutgoingMessage(body='{"x": 1}')])
    with pytest.raises(GrpcBrokerError):
        pub.sync_call('{"x": 1}', timeout=2)


def test_sync_call_in_flight_when_consumer_dies_surfaces_the_failure(queue_name):
    """A call the consumer took, then died on, is not silently re-run elsewhere: the caller is told."""
    a = ConsumerProcess(queue_name, free_port())
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = GrpcBroker(queue_name, GrpcBroker.parse_options({"addresses": [a.address]}))
        import threading
        err = {}
        def call():
            try:
                pub.sync_call(json.dumps({"sleep": 5}), timeout=20)
            except Exception as e:  # noqa: BLE001 - the test inspects it
                err["e"] = e
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)  # let the consumer take the task (no observable condition from outside)
        a.kill()
        t.join(10)
        assert isinstance(err.get("e"), GrpcBrokerError) and err["e"].code == "UNAVAILABLE"
    finally:
        a.kill()
        b.kill()


def test_single_address_sync_call_retries_until_a_consumer_serves(queue_name):
    """With one address, sync_call's first attempt takes a fast path; a refused attempt (nothing listening
    yet) must still be retried on that address until a consumer serves it, within publish_timeout."""
    import threading
    port = free_port()
    pub = GrpcBroker(queue_name, GrpcBroker.parse_options(
        {"addresses": [f"127.0.0.1:{port}"], "publish_timeout": 30, "health_check_interval": 0.1}))
    out: dict = {}

    def call() -> None:
        try:
            out["r"] = pub.sync_call('{"x": 3}', timeout=30)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out["e"] = e

    t = threading.Thread(target=call)
    t.start()
    ep = pub.client.endpoints[0]
    a = None
    try:
        assert wait_until(lambda: ep.down_until > 0 or not t.is_alive(), 10)  # the first attempt was refused
        a = ConsumerProcess(queue_name, port)
        t.join(30)
        assert not t.is_alive()
        assert out.get("r", {}).get("doubled") == 6, out
    finally:
        if a is not None:
            a.kill()
        t.join(35)
