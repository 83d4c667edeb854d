"""The GrpcBroker data path against its real gRPC server on loopback."""
import json
import threading
import time

import pytest
from funboost.exceptions import RpcTimeout
from funboost.plugins.broker import OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind

from funboost_grpc import GrpcBroker, NoConsumerAvailable, RemoteTaskError
from support import LoopThread, wait_until


def msg(i, **kw):
    return OutgoingMessage(body=json.dumps({"x": i, **kw, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")


@pytest.fixture
def pair(queue_name, port):
    """A consumer broker (serving) and a publisher broker of the same queue."""
    opts = GrpcBroker.parse_options({"port": port})
    consumer, publisher = GrpcBroker(queue_name, opts), GrpcBroker(queue_name, opts)
    consumer.serve()
    yield consumer, publisher
    consumer.close()
    publisher.close()


def test_registered_by_entry_point():
    cls = resolve_broker_kind("GRPC")
    assert cls is GrpcBroker
    caps = cls.capabilities
    assert caps.request_response and not caps.persistent and not caps.at_least_once
    assert cls.distribution == "funboost-grpc"


def test_options_from_env(monkeypatch):
    monkeypatch.setenv("FUNBOOST_GRPC_ADDRESSES", "127.0.0.1:1, 127.0.0.1:2")
    monkeypatch.setenv("FUNBOOST_GRPC_TOKEN", "s3cret")
    monkeypatch.setenv("FUNBOOST_GRPC_PORT", "4321")
    o = GrpcBroker.parse_options({})
    assert o.addresses == ["127.0.0.1:1", "127.0.0.1:2"] and o.token == "s3cret" and o.port == 4321
    assert o.host == "127.0.0.1"
    with pytest.raises(Exception):
        GrpcBroker.parse_options({"prot": 1})


def test_publish_fetch_ack_in_order(pair):
    consumer, publisher = pair
    publisher.publish([msg(i) for i in range(5)])
    assert consumer.queue_size().ready == 5
    got = consumer.fetch(10, 1.0)
    assert [d.body["x"] for d in got] == list(range(5))
    assert consumer.queue_size().as_dict() == {"ready": 0, "in_flight": 5, "delayed": None}
    consumer.ack(got)
    assert consumer.queue_size().in_flight == 0
    assert consumer.fetch(10, 0.05) == []


def test_requeue_and_purge(pair):
    consumer, publisher = pair
    publisher.publish([msg(1), msg(2)])
    got = consumer.fetch(1, 1.0)
    consumer.requeue(got)
    assert consumer.queue_size().ready == 2
    assert sorted(d.body["x"] for d in consumer.fetch(10, 1.0)) == [1, 2]
    publisher.publish([msg(3), msg(4), msg(5)])
    assert publisher.purge() == 3  # the publisher in the consumer's process sees the local buffer
    assert consumer.queue_size().ready == 0


def test_reject_goes_to_dead_letter_buffer(pair, queue_name, port):
    consumer, publisher = pair
    publisher.publish([msg(7)])
    got = consumer.fetch(1, 1.0)
    consumer.reject(got, "bad input")
    dlx = GrpcBroker(f"{queue_name}_dlx", consumer.options)
    try:
        dead = dlx.fetch(10, 1.0)
        assert len(dead) == 1 and dead[0].body["x"] == 7
        assert dead[0].body["extra"]["dead_letter_reason"] == "bad input"
        dlx.ack(dead)
    finally:
        dlx.close()


def test_backpressure_resource_exhausted(queue_name, port):
    opts = GrpcBroker.parse_options({"port": port, "buffer_size": 3, "publish_timeout": 0.3})
    consumer, publisher = GrpcBroker(queue_name, opts), GrpcBroker(queue_name, opts)
    consumer.serve()
    try:
        publisher.publish([msg(i) for i in range(3)])
        t0 = time.monotonic()
        with pytest.raises(NoConsumerAvailable, match="RESOURCE_EXHAUSTED"):
            publisher.publish([msg(9)])
        assert time.monotonic() - t0 < 5
        # a batch larger than the room left is partly accepted, the rest waits for room
        consumer.ack(consumer.fetch(2, 1.0))
        done = threading.Event()
        threading.Thread(target=lambda: (publisher.publish([msg(10), msg(11), msg(12)]), done.set()),
                         daemon=True).start()
        assert wait_until(lambda: consumer.queue_size().ready == 3, 5)
        assert not done.is_set()
        consumer.ack(consumer.fetch(1, 1.0))
        assert done.wait(5)
    finally:
        consumer.close()


def test_sync_call_result_and_remote_exception(pair):
    consumer, publisher = pair
    loop = LoopThread(consumer)
    try:
        assert publisher.sync_call(json.dumps({"x": 21}), timeout=10)["doubled"] == 42
        with pytest.raises(RemoteTaskError) as info:
            publisher.sync_call(json.dumps({"fail": "boom"}), timeout=10)
        assert info.value.exception_type == "ZeroDivisionError"
        assert info.value.exception_msg == "boom"
        assert info.value.status["success"] is False
        # many concurrent callers each get their own answer
        results = {}
        def call(i):
            results[i] = publisher.sync_call(json.dumps({"x": i}), timeout=10)["doubled"]
        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join(15) for t in threads]
        assert results == {i: 2 * i for i in range(16)}
    finally:
        loop.close()


def test_sync_call_reply_from_test_thread(pair):
    """The engine's contract: it calls delivery.reply(status) before ack."""
    consumer, publisher = pair
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", publisher.sync_call('{"x": 1}', 10)))
    t.start()
    got = consumer.fetch(1, 5.0)
    assert len(got) == 1 and got[0].reply is not None
    got[0].reply({"success": True, "result": [1, "a"]})
    consumer.ack(got)
    t.join(5)
    assert out["r"] == [1, "a"]


def test_sync_call_timeout_and_abandoned_call_is_skipped(pair):
    consumer, publisher = pair
    with pytest.raises(RpcTimeout):
        publisher.sync_call('{"x": 1}', timeout=0.3)
    # nobody fetched in time: the caller gave up, so the consumer does not run it any more
    assert wait_until(lambda: consumer.fetch(10, 0.1) == [], 3)


def test_ack_without_reply_fails_the_call_instead_of_hanging(pair):
    consumer, publisher = pair
    err = {}
    def call():
        try:
            publisher.sync_call('{"x": 1}', 10)
        except RemoteTaskError as e:
            err["e"] = e
    t = threading.Thread(target=call)
    t.start()
    consumer.ack(consumer.fetch(1, 5.0))
    t.join(5)
    assert err["e"].exception_type == "NoResult"


def test_queue_size_and_purge_from_another_process_view(queue_name, port):
    """A publisher that does not host the queue asks the consumers (Stats/Purge RPCs)."""
    from funboost.testing.failover import ConsumerProcess

    proc = ConsumerProcess("GRPC", queue_name, port, {"buffer_size": 50}, lifetime=30)
    try:
        pub = GrpcBroker("other_" + queue_name, GrpcBroker.parse_options({"addresses": [proc.address]}))
        assert pub.queue_size().ready is None  # nobody hosts that queue: unknown, not 0
        pub = GrpcBroker(queue_name, GrpcBroker.parse_options({"addresses": [proc.address]}))
        size = pub.queue_size()
        assert size.ready is not None and size.ready >= 0
        assert pub.purge() >= 0
    finally:
        proc.kill()


def test_no_consumer_fails_after_publish_timeout(queue_name, port):
    pub = GrpcBroker(queue_name, GrpcBroker.parse_options({"port": port, "publish_timeout": 0.3}))
    with pytest.raises(NoConsumerAvailable):
        pub.publish([msg(1)])
    assert pub.queue_size().ready is None
    assert pub.purge() == -1


def test_port_in_use_is_a_clear_error(queue_name, port):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    try:
        b = GrpcBroker(queue_name, GrpcBroker.parse_options({"port": port}))
        with pytest.raises(OSError, match="cannot listen"):
            b.serve()
    finally:
        s.close()


def test_two_queues_share_one_server(port, queue_name):
    opts = GrpcBroker.parse_options({"port": port})
    a, b = GrpcBroker(queue_name + "_a", opts), GrpcBroker(queue_name + "_b", opts)
    assert a.serve() == b.serve()
    try:
        GrpcBroker(queue_name + "_b", opts).publish([msg(1)])
        assert a.queue_size().ready == 0 and b.queue_size().ready == 1
        a.close()
        assert b.health()[b.address] == "SERVING"
        assert GrpcBroker(queue_name + "_a", opts).health()[b.address] == "NOT_SERVING"
    finally:
        b.close()


def test_port_zero_publisher_in_the_serving_process_reaches_the_consumer(queue_name):
    """port 0: the consumer listens on a free port; a publisher of the same process without addresses
    targets that server (before it serves, it has nowhere to go: a clear error)."""
    opts = GrpcBroker.parse_options({"port": 0, "publish_timeout": 0.3})
    early = GrpcBroker(queue_name, opts)
    with pytest.raises(NoConsumerAvailable):
        early.publish([msg(0)])
    consumer, publisher = GrpcBroker(queue_name, opts), GrpcBroker(queue_name, opts)
    address = consumer.serve()
    try:
        assert not address.endswith(":0")
        publisher.publish([msg(1)])
        early.publish([msg(2)])  # its unresolved client was not kept
        assert sorted(d.body["x"] for d in consumer.fetch(10, 5.0)) == [1, 2]
        assert publisher.client.endpoints[0].address == address
    finally:
        consumer.close()
        publisher.close()
        early.close()
