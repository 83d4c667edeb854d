"""Several consumers (real @boost consumers in subprocesses): round robin, failover when one is SIGKILLed,
health-based skipping, a consumer killed mid-call, and publishing while no consumer serves."""
from __future__ import annotations

import json
import threading
import time

import pytest
from funboost.exceptions import RpcTimeout
from funboost.plugins.broker import OutgoingMessage

from funboost_http import HttpBroker, NoConsumerAvailable
from funboost_http.errors import HttpBrokerError
from support import ConsumerProcess, free_port, wait_until


@pytest.fixture
def two_consumers(queue_name):
    procs = [ConsumerProcess(queue_name, free_port()), ConsumerProcess(queue_name, free_port())]
    yield procs
    for p in procs:
        p.kill()


def publisher(queue_name: str, addresses: list[str], **opts) -> HttpBroker:
    return HttpBroker(queue_name, HttpBroker.parse_options({"addresses": addresses, "health_check_interval": 0.1,
                                                            **opts}))


def test_round_robin_then_failover_after_kill(two_consumers, queue_name):
    a, b = two_consumers
    pub = publisher(queue_name, [a.address, b.address], publish_timeout=5)
    pids = {pub.sync_call(json.dumps({"x": i}), timeout=20)["pid"] for i in range(6)}
    assert pids == {a.pid, b.pid}  # balanced across both
    assert pub.health() == {a.address: "SERVING", b.address: "SERVING"}

    a.kill()
    pids = [pub.sync_call(json.dumps({"x": i}), timeout=20)["pid"] for i in range(10)]
    assert set(pids) == {b.pid}  # every call still succeeds, on the survivor
    for i in range(10):  # fire-and-forget pushes fail over too
        pub.publish([OutgoingMessage(body=json.dumps({"x": i}))])
    health = pub.health()
    assert health[a.address] == "UNREACHABLE" and health[b.address] == "SERVING"
    assert pub.client.endpoints[0].down_until > 0  # marked down: skipped rather than tried first


def test_revived_consumer_is_used_again(queue_name):
    port_a = free_port()
    a = ConsumerProcess(queue_name, port_a)
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = publisher(queue_name, [a.address, b.address])
        a.kill()
        for i in range(4):
            assert pub.sync_call(json.dumps({"x": i}), timeout=20)["pid"] == b.pid
        a = ConsumerProcess(queue_name, port_a)  # same address, new process
        # the health prober sees it serving again and round robin includes it
        assert wait_until(lambda: pub.sync_call(json.dumps({"x": 1}), timeout=20)["pid"] == a.pid, 20)
    finally:
        a.kill()
        b.kill()


def test_remote_errors_come_back(queue_name):
    a = ConsumerProcess(queue_name, free_port())
    try:
        pub = publisher(queue_name, [a.address])
        assert pub.sync_call(json.dumps({"x": 21}), timeout=20)["doubled"] == 42
        from funboost_http import RemoteTaskError
        with pytest.raises(RemoteTaskError) as e:
            pub.sync_call(json.dumps({"fail": "boom"}), timeout=20)
        assert e.value.exception_type == "ZeroDivisionError" and e.value.exception_msg == "boom"
        assert e.value.status["pid"] == a.pid
        with pytest.raises(RpcTimeout):  # the function outlives the caller's timeout
            pub.sync_call(json.dumps({"sleep": 5}), timeout=0.5)
    finally:
        a.kill()


def test_server_killed_mid_call_fails_within_the_timeout(queue_name):
    """A call the consumer took, then died on, is not silently re-run elsewhere: the caller is told, well
    before its own timeout."""
    a = ConsumerProcess(queue_name, free_port())
    b = ConsumerProcess(queue_name, free_port())
    try:
        pub = publisher(queue_name, [a.address, b.address])
        # a slow call pinned to a (a publisher whose only address is a)
        pub_a = publisher(queue_name, [a.address])
        out: dict = {}

        def call() -> None:
            t0 = time.monotonic()
            try:
                pub_a.sync_call(json.dumps({"sleep": 30}), timeout=20)
            except Exception as e:  # noqa: BLE001 - the test inspects it
                out["e"] = e
            out["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=call)
        t.start()
        # the consumer has taken it once its buffer / inline runner shows it in flight
        assert wait_until(lambda: pub_a.queue_size().in_flight == 1, 20)
        a.kill()
        t.join(25)
        assert not t.is_alive()
        assert isinstance(out.get("e"), HttpBrokerError) and out["e"].code == "UNAVAILABLE", out
        assert out["elapsed"] < 20
        assert pub.sync_call(json.dumps({"x": 2}), timeout=20)["pid"] == b.pid  # the other one still works
    finally:
        a.kill()
        b.kill()


def test_no_consumer_serving_is_a_clear_error(queue_name):
    port = free_port()  # nothing listens here
    pub = publisher(queue_name, [f"127.0.0.1:{port}"], publish_timeout=0.5)
    with pytest.raises(NoConsumerAvailable) as e:
        pub.publish([OutgoingMessage(body='{"x": 1}')])
    assert queue_name in str(e.value) and f"127.0.0.1:{port}" in str(e.value) and e.value.code == "UNAVAILABLE"
    with pytest.raises(NoConsumerAvailable):
        pub.sync_call('{"x": 1}', timeout=10)
    assert pub.queue_size().ready is None  # unknown, never a fake 0

    # a consumer that serves another queue on that address does not take it either
    a = ConsumerProcess(f"{queue_name}_other", port)
    try:
        with pytest.raises(NoConsumerAvailable) as e:
            pub.publish([OutgoingMessage(body='{"x": 1}')])
        assert "404" in str(e.value)
    finally:
        a.kill()


def test_single_address_sync_call_waits_for_a_consumer_that_starts_later(queue_name):
    port = free_port()
    pub = publisher(queue_name, [f"127.0.0.1:{port}"], publish_timeout=30)
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
