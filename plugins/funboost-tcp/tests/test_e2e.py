"""Through the engine: @boost with broker_kind="TCP", push, sync_call, AsyncResult, remote errors."""
import json
import threading
import time
from typing import Any, ContextManager

import pytest
from funboost import RpcTimeout
from funboost.testing import wait_until
from funboost.testing.serving import (assert_a_call_is_answered_by_the_run_after_a_requeue,
                                      assert_sync_call_and_remote_error, serving_booster, serving_divide)

from funboost.testing.tls import pki  # noqa: F401  (the fixture: certificates made by the test)

from funboost_tcp import NoConsumerAvailable, RemoteTaskError as TcpRemoteTaskError, TcpBroker
from funboost_tcp import protocol as p
from support import RawClient, free_port


def test_readme_example(queue_name):
    # the example of README.md and docs/brokers/tcp.md, on a free port
    def add(x, y):
        return x + y

    with serving_booster("TCP", queue_name, add) as add:
        add.push(1, 2)
        assert add.sync_call(1, 2, timeout=5) == 3


def test_push_sync_call_remote_errors_and_async_result(queue_name):
    with serving_divide("TCP", queue_name, is_using_rpc_mode=True) as (divide, seen):
        error = assert_sync_call_and_remote_error(divide, TcpRemoteTaskError)
        assert error.status["task_id"]
        results = [divide.push(i, b=1) for i in range(20)]  # AsyncResult (rpc mode, memory state backend)
        assert [r.get(timeout=20) for r in results] == [float(i) for i in range(20)]
        assert len(seen) == 22
        assert divide.get_message_count() == 0


def _serving_nap(queue_name: str, port: int, concurrency: int) -> ContextManager[Any]:
    """nap(x, sleep=0) -> x after sleeping, served on ``port`` for the ``with`` block."""

    def nap(x: int, sleep: float = 0.0) -> int:
        time.sleep(sleep)
        return x
    return serving_booster("TCP", queue_name, nap, {"port": port}, concurrent_num=concurrency, max_retry_times=0)


def test_many_threads_share_one_connection_and_replies_come_out_of_order(queue_name):
    port = free_port()

    with _serving_nap(queue_name, port, concurrency=16):
        publisher = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "connections_per_consumer": 1}))
        slow_done = []
        slow = threading.Thread(target=lambda: slow_done.append(
            publisher.sync_call(json.dumps({"x": -1, "sleep": 2.0}), 20)))
        slow.start()
        # a quick call sent after the slow one on the same connection is answered first
        assert publisher.sync_call(json.dumps({"x": 7}), 10) == 7
        assert not slow_done
        errors = []

        def caller(k: int) -> None:
            try:
                for i in range(25):
                    assert publisher.sync_call(json.dumps({"x": k * 100 + i}), 20) == k * 100 + i
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        slow.join(20)
        assert not errors and slow_done == [-1]
        server = TcpBroker.registry.lookup("127.0.0.1", port)
        assert server.connection_count == 1  # one multiplexed connection for all those threads


def test_threads_get_connections_of_their_own_up_to_the_pool_size_then_share_them(queue_name):
    """Callers at once up to ``connections_per_consumer`` each get a connection of their own (no hand-off
    between threads on either side); more callers than that multiplex on the pool's connections."""
    port = free_port()

    with _serving_nap(queue_name, port, concurrency=32):
        publisher = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "connections_per_consumer": 3}))
        server = TcpBroker.registry.lookup("127.0.0.1", port)
        errors: list = []
        barrier = threading.Barrier(12)

        def caller(k: int) -> None:
            try:
                barrier.wait(10)
                for i in range(10):  # each call sleeps, so all 12 threads overlap
                    assert publisher.sync_call(json.dumps({"x": k * 100 + i, "sleep": 0.05}), 20) == k * 100 + i
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(12)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert not errors
        pool = publisher.client.endpoints[0].conn
        assert len(pool.connections) == 3  # never more than the pool size...
        assert server.connection_count == 3  # ...and each was used (12 callers on 3 connections)
        assert sorted(pool.idle, key=id) == sorted(pool.connections, key=id)  # all idle again afterwards


def test_sync_call_timeout(queue_name):
    port = free_port()

    def slow(sleep: float) -> str:
        time.sleep(sleep)
        return "late"

    with serving_booster("TCP", queue_name, slow, {"port": port}, max_retry_times=0) as slow:
        t0 = time.monotonic()
        with pytest.raises(RpcTimeout):
            slow.sync_call(3.0, timeout=0.5)
        assert time.monotonic() - t0 < 3.0
        assert slow.sync_call(0.0, timeout=10) == "late"


def test_a_reading_caller_that_times_out_hands_the_reading_over(queue_name):
    """On a plain connection one waiting caller reads the replies for all (leader/follower). When it gives
    up (its deadline), another waiting caller must take over the reading, or that one would never get its
    reply."""
    port = free_port()

    with _serving_nap(queue_name, port, concurrency=4):
        publisher = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "connections_per_consumer": 1}))
        assert publisher.sync_call(json.dumps({"x": 0}), 10) == 0  # connected
        conn = publisher.client.endpoints[0].conn.connections[0]
        out: dict = {}

        def first() -> None:
            try:
                publisher.sync_call(json.dumps({"x": 1, "sleep": 3.0}), 0.8)
            except Exception as exc:  # noqa: BLE001 - inspected below
                out["first"] = exc

        a = threading.Thread(target=first)
        a.start()
        wait_until(lambda: conn.reader is not None, 10, message="the first caller reads")
        b = threading.Thread(target=lambda: out.setdefault("second", publisher.sync_call(
            json.dumps({"x": 2, "sleep": 1.5}), 20)))
        b.start()
        a.join(20)
        b.join(30)
        assert isinstance(out.get("first"), RpcTimeout), out
        assert out.get("second") == 2, out
        assert publisher.sync_call(json.dumps({"x": 3}), 10) == 3  # the connection still serves


def test_push_without_a_serving_consumer_raises_a_clear_error(queue_name):
    port = free_port()  # nothing listens there
    pub = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "publish_timeout": 0.5}))
    from funboost.plugins.broker import OutgoingMessage
    with pytest.raises(NoConsumerAvailable) as e:
        pub.publish([OutgoingMessage(body='{"x": 1}')])
    text = str(e.value)
    assert queue_name in text and f"127.0.0.1:{port}" in text and "cannot connect" in text
    assert e.value.code == "UNAVAILABLE"

    # a consumer that listens but hosts another queue refuses too (NOT_FOUND), with the same error
    other = TcpBroker("some_other_queue", TcpBroker.parse_options({"port": port}))
    other.serve()
    try:
        with pytest.raises(NoConsumerAvailable) as e:
            pub.publish([OutgoingMessage(body='{"x": 1}')])
        assert "NOT_FOUND" in str(e.value)
        assert pub.health(timeout=2) == {f"127.0.0.1:{port}": "NOT_SERVING"}
    finally:
        other.close()
    assert wait_until(lambda: pub.health(timeout=0.5)[f"127.0.0.1:{port}"] == "UNREACHABLE", 10)


def test_wire_format_example_of_the_docs_pushes_a_task_without_funboost(queue_name):
    """docs/brokers/tcp.md: a plain socket pushes {"x": 1, "y": 2} (no "extra"); the engine runs it."""
    import socket
    import struct
    port = free_port()
    got = []

    def add(x, y):
        got.append(x + y)

    with serving_booster("TCP", queue_name, add, {"port": port}) as add:
        s = socket.create_connection(("127.0.0.1", port))
        payload = json.dumps({"queue": queue_name, "bodies": [{"x": 1, "y": 2}]}).encode()
        s.sendall(struct.pack(">IIB", len(payload), 1, 1) + payload)
        length, request_id, frame_type = struct.unpack(">IIB", s.recv(9))
        assert (request_id, frame_type, json.loads(s.recv(length))) == (1, 128, {"accepted": 1})
        s.close()
        wait_until(lambda: got == [3], 10, message="the pushed task ran")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_call_that_outlives_its_timeout_is_answered_deadline_exceeded_at_the_deadline(queue_name, tls, request):
    """A call runs inline in the thread that read it, so that thread cannot answer at the caller's deadline:
    the server's deadline watcher does (DEADLINE_EXCEEDED, as the docs list), the late result is dropped, and
    the connection keeps serving. Seen with a raw client, which has no deadline of its own."""
    port = free_port()
    opts: dict = {"port": port}
    ca = None
    if tls:
        certs = request.getfixturevalue("pki")
        opts.update(tls_cert_file=certs["server.pem"], tls_key_file=certs["server.key"])
        ca = certs["ca.pem"]
    finished = []

    def slow(sleep: float) -> str:
        time.sleep(sleep)
        finished.append(sleep)
        return "late"

    with serving_booster("TCP", queue_name, slow, opts, max_retry_times=0) as slow:
        raw = RawClient(port, ca_file=ca)
        try:
            t0 = time.monotonic()
            rid = raw.send(p.CALL, {"queue": queue_name, "timeout": 0.5, "body": {"sleep": 3.0}})
            got, frame_type, reply = raw.read()
            assert (got, frame_type, reply["code"]) == (rid, p.ERROR, "DEADLINE_EXCEEDED"), reply
            assert time.monotonic() - t0 < 2.0 and not finished  # answered at the deadline, the task still running
            frame_type, reply = raw.request(p.CALL, {"queue": queue_name, "timeout": 5, "body": {"sleep": 0}})
            assert (frame_type, reply["result"]) == (p.OK, "late")
            wait_until(lambda: 3.0 in finished, 10, message="the timed-out task finished")
            # the timed-out call's late result never reaches the wire: the next frame answers the next request
            assert raw.request(p.PING, {}) == (p.OK, {"serving": True})
        finally:
            raw.close()


def test_arguments_that_do_not_fit_get_an_error_reply(queue_name):
    """Issue 17: wrong arguments get an error reply (they were accepted and dead-lettered by the engine
    afterwards; a call got OK with a DeadLettered failure). The connection keeps serving."""
    port = free_port()

    def add(x, y):
        return x + y

    with serving_booster("TCP", queue_name, add, {"port": port}) as add:
        raw = None
        try:
            assert add.sync_call(1, 2, timeout=10) == 3  # serving
            raw = RawClient(port)
            for frame_type, req, words in (
                    (p.PUBLISH, {"queue": queue_name, "bodies": [{"x": 1}]}, "missing ['y']"),
                    (p.PUBLISH, {"queue": queue_name, "bodies": [{"x": 1, "y": 2}, {"x": 1, "y": 2, "z": 3}]},
                     "unknown ['z']"),
                    (p.CALL, {"queue": queue_name, "timeout": 5, "body": {"x": 1}}, "missing ['y']"),
                    (p.PUBLISH, {"queue": queue_name, "bodies": [{"x": 1, "y": 2, "extra": 5}]}, "'extra' must be")):
                frame, reply = raw.request(frame_type, req)
                assert frame == p.ERROR and reply["code"] == "BAD_REQUEST" and words in reply["message"], reply
            assert add.broker.queue_size().ready == 0
            frame, reply = raw.request(p.CALL, {"queue": queue_name, "timeout": 5, "body": {"x": 1, "y": 2}})
            assert frame == p.OK and reply["success"] and reply["result"] == 3, reply
        finally:
            if raw is not None:
                raw.close()


def test_sync_calls_and_pushed_tasks_together_respect_concurrent_num(queue_name):
    """A sync_call runs inline in the server's thread; it counted only other inline calls, so up to twice
    concurrent_num tasks ran at once (a pushed task in the pool and a call beside it)."""
    state = {"active": 0, "max": 0}
    lock = threading.Lock()

    def slow(seconds: float) -> str:
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        time.sleep(seconds)
        with lock:
            state["active"] -= 1
        return "ok"

    with serving_booster("TCP", queue_name, slow, concurrent_num=1) as slow:
        assert slow.sync_call(0, timeout=10) == "ok"  # serving
        slow.push(0.5)
        wait_until(lambda: state["active"] == 1, 10, message="the pushed task runs")
        results = []
        threads = [threading.Thread(target=lambda: results.append(slow.sync_call(0.1, timeout=30))) for _ in range(4)]
        [t.start() for t in threads]
        [t.join(40) for t in threads]
        assert results == ["ok"] * 4
        assert state["max"] == 1, f"{state['max']} tasks ran at once with concurrent_num=1"


def test_a_sync_call_is_answered_by_the_run_after_a_requeue(queue_name):
    assert_a_call_is_answered_by_the_run_after_a_requeue("TCP", queue_name)
