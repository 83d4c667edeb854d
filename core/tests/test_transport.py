"""Unit tests of the transport primitives (funboost.transport): the local queue, pending calls, the status
codec, the framing-free server handlers, the inline runner, and the client's failover.

The client tests use an in-process framing (``LoopbackClient``: each ``send_*`` calls a real
:class:`QueueServer`'s handler directly), which is exactly what a transport adds around the network."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from funboost.exceptions import RpcTimeout
from funboost.testing import wait_until
from funboost.transport.handler_threads import HandlerThreads
from funboost.transport import (AttemptFailed, AttemptTimedOut, Backpressure, BadRequest, CallDeadlineExceeded, Endpoint,
                                EndpointRefused, EndpointUnreachable, InlineRunner, LocalQueue, NoConsumerAvailable,
                                PendingCall, QueueServer, RemoteTaskError, RequestError, ServerRegistry,
                                TransportClient, TransportError, UnknownQueue, decode_status, encode_status,
                                result_of)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def bodies(q_deliveries) -> list:
    return [d.body for d in q_deliveries]


# ---------------------------------------------------------------------- LocalQueue
def test_fifo_tags_and_settle():
    q: LocalQueue[str] = LocalQueue("q")
    assert q.offer(["a", "b", "c"]) == 3
    got = q.take(2, 0)
    assert bodies(got) == ["a", "b"]
    assert len({d.tag for d in got}) == 2
    assert q.counts() == (1, 2, 0)
    [c] = q.take(10, 0)
    assert c.tag not in {d.tag for d in got}  # tags are unique within the queue
    assert q.settle([got[0].tag, 999]) == ["a"]  # unknown tags are skipped
    assert q.settle([got[0].tag]) == []  # settling twice is harmless
    assert q.counts() == (0, 2, 0)


def test_capacity_offer_takes_only_what_fits_and_in_flight_does_not_count():
    q: LocalQueue[int] = LocalQueue("q", capacity=3)
    assert q.offer([1, 2]) == 2
    assert q.offer([3, 4, 5]) == 1  # a prefix: the caller keeps the rest
    assert q.offer([6]) == 0
    got = q.take(2, 0)
    assert bodies(got) == [1, 2]
    assert q.offer([7, 8, 9]) == 2  # in-flight items do not hold room
    assert len(q) == 3
    with pytest.raises(ValueError):
        LocalQueue("bad", capacity=0)


def test_take_waits_until_its_deadline_and_returns_empty():
    q: LocalQueue[int] = LocalQueue("q")
    t0 = time.monotonic()
    assert q.take(5, 0.2) == []
    assert time.monotonic() - t0 >= 0.19  # it did wait (never less than asked)
    assert q.take(5, 0) == []  # timeout 0: a poll


def test_a_waiting_take_is_woken_by_offer_before_its_deadline():
    q: LocalQueue[int] = LocalQueue("q")
    out: list = []
    t = threading.Thread(target=lambda: out.append(q.take(10, 60.0)))
    t.start()
    assert wait_for(lambda: q._waiting == 1)
    q.offer([42])
    t.join(10)
    assert not t.is_alive() and bodies(out[0]) == [42]


def test_requeue_puts_in_flight_back_keeping_priority():
    q: LocalQueue[str] = LocalQueue("q")
    q.offer(["low"])
    q.offer(["high"], priority=5)
    got = q.take(2, 0)
    assert bodies(got) == ["high", "low"]
    assert q.requeue([got[1].tag, 12345]) == 1
    assert q.counts() == (1, 1, 0)
    q.offer(["low2"])
    assert q.requeue([got[0].tag]) == 1
    assert bodies(q.take(10, 0)) == ["high", "low", "low2"]  # the requeued high-priority item first


def test_requeue_wakes_a_waiting_taker():
    q: LocalQueue[str] = LocalQueue("q")
    q.offer(["a"])
    [d] = q.take(1, 0)
    out: list = []
    t = threading.Thread(target=lambda: out.append(q.take(1, 60.0)))
    t.start()
    assert wait_for(lambda: q._waiting == 1)
    q.requeue([d.tag])
    t.join(10)
    assert bodies(out[0]) == ["a"] and out[0][0].tag != d.tag  # a new delivery, a new tag


def test_priorities_highest_first_fifo_within_one():
    q: LocalQueue[str] = LocalQueue("q")
    for name, prio in [("a1", 1), ("b5", 5), ("c0", 0), ("d5", 5), ("e3", 3)]:
        q.offer([name], priority=prio)
    assert bodies(q.take(3, 0)) == ["b5", "d5", "e3"]
    assert bodies(q.take(3, 0)) == ["a1", "c0"]


def test_delayed_items_wait_for_their_eta_and_take_wakes_when_due():
    q: LocalQueue[str] = LocalQueue("q")
    q.offer(["past"], eta=time.time() - 1)  # already due: ready now
    q.offer(["later"], eta=time.time() + 0.3)
    assert q.counts() == (1, 0, 1)
    assert bodies(q.take(10, 0)) == ["past"]
    assert q.take(10, 0) == []  # not due yet
    got = q.take(10, 30.0)  # waits for the eta, not for the 30 s deadline
    assert bodies(got) == ["later"]


def test_put_evicting_drops_the_oldest_when_full():
    q: LocalQueue[int] = LocalQueue("q", capacity=2)
    assert q.put_evicting(1) is None
    assert q.put_evicting(2) is None
    assert q.put_evicting(3) == 1
    assert bodies(q.take(10, 0)) == [2, 3]


def test_abandoned_items_are_skipped_and_purge_drain():
    q: LocalQueue[dict] = LocalQueue("q", abandoned=lambda item: item.get("gone", False))
    q.offer([{"i": 1, "gone": True}, {"i": 2}])
    assert [d.body["i"] for d in q.take(10, 0)] == [2]
    q.offer([{"i": 3}, {"i": 4}])
    q.offer([{"i": 5}], eta=time.time() + 60)
    [d] = q.take(1, 0)
    assert sorted(x["i"] for x in q.purge()) == [4, 5]  # ready + delayed; in-flight stays
    assert q.counts() == (0, 2, 0)
    assert sorted(x["i"] for x in q.drain()) == [2, 3]
    assert q.counts() == (0, 0, 0)


def _run_producers_and_consumers(q: LocalQueue, produce, n_producers: int, expected: list) -> None:
    """``produce(k)`` in ``n_producers`` threads while 3 threads take and settle: every expected item is
    taken exactly once and nothing is left."""
    seen: list = []
    seen_lock = threading.Lock()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            got = q.take(16, 0.05)
            with seen_lock:
                seen.extend(d.body for d in got)
            q.settle([d.tag for d in got])

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(n_producers)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(30)
    assert wait_for(lambda: len(seen) >= len(expected), 30)
    stop.set()
    for t in consumers:
        t.join(10)
    assert sorted(seen) == sorted(expected)
    assert q.counts() == (0, 0, 0)


def test_concurrent_producers_and_consumers_deliver_each_item_once():
    q: LocalQueue[int] = LocalQueue("q", capacity=50, linger=0.0005)
    n_producers, per = 4, 500

    def produce(k: int) -> None:
        items = list(range(k * per, (k + 1) * per))
        while items:
            n = q.offer(items[:7])
            del items[:n]
            if not n:
                time.sleep(0.0005)

    _run_producers_and_consumers(q, produce, n_producers, list(range(n_producers * per)))


def test_unbounded_put_never_loses_a_wake_up_of_a_taker_entering_its_wait():
    """The unbounded queue's put does not take the mutex (a taker counts itself waiting before its last
    look): race a put against a taker that is just going to sleep, many times. A lost wake-up would leave
    the taker asleep until its 30 s timeout."""
    import sys
    q: LocalQueue[int] = LocalQueue("q")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the put lands anywhere in the take
    try:
        for i in range(1000):
            out: list = []
            t = threading.Thread(target=lambda: out.append(q.take(5, 30.0)))
            t.start()
            q.offer([i])
            t.join(5)
            assert not t.is_alive(), f"round {i}: the taker missed the put"
            assert bodies(out[0]) == [i]
            q.settle([d.tag for d in out[0]])
    finally:
        sys.setswitchinterval(interval)


def test_unbounded_concurrent_producers_and_consumers_deliver_each_item_once():
    """The unbounded put (no mutex) from 4 threads against 3 takers."""
    q: LocalQueue[str] = LocalQueue("q", linger=0.0005)
    n_producers, per = 4, 2000

    def produce(k: int) -> None:
        for j in range(per):
            q.offer([f"{k}.{j}"])

    _run_producers_and_consumers(q, produce, n_producers, [f"{k}.{j}" for k in range(n_producers) for j in range(per)])


def test_a_publisher_far_ahead_of_its_consumer_yields_the_gil(monkeypatch):
    """Once a consumer in this process took from the queue, a publisher adding while more than
    YIELD_BACKLOG items wait sleeps(0) once per YIELD_EVERY items; never before anything was taken,
    never below the backlog."""
    import funboost.transport.local_queue as lq
    from funboost.plugins.broker import OutgoingMessage
    sleeps: list[float] = []
    q: LocalQueue[OutgoingMessage] = LocalQueue("q")
    monkeypatch.setattr(lq.time, "sleep", sleeps.append)
    n = LocalQueue.YIELD_BACKLOG + 10 * LocalQueue.YIELD_EVERY
    for i in range(n):
        q.put([OutgoingMessage(body=i)])
    assert sleeps == []  # nobody consumes: no reason to yield
    q.take(1, 0)  # now a consumer takes from it
    for i in range(10 * LocalQueue.YIELD_EVERY):
        q.put([OutgoingMessage(body=i)])
    assert sleeps == [0] * 10
    q.purge()
    sleeps.clear()
    for i in range(LocalQueue.YIELD_BACKLOG):
        q.put([OutgoingMessage(body=i)])
    assert sleeps == []  # at or below the backlog threshold: no yield


# ---------------------------------------------------------------------- PendingCall and the status codec
def test_pending_call_reply_before_wait_needs_no_event():
    p = PendingCall()
    p.reply({"success": True, "result": 1})
    assert p.wait(0) is True and p._event is None
    p.reply({"success": True, "result": 2})  # the first reply wins
    assert p.status["result"] == 1


def test_pending_call_wait_times_out_then_is_woken_from_another_thread():
    p = PendingCall()
    assert p.wait(0.05) is False
    threading.Timer(0.05, p.fail, args=("Purged", "gone")).start()
    assert p.wait(30) is True
    assert p.status["success"] is False and p.status["exception_type"] == "Purged"
    assert p.status["exception"] == "Purged: gone"


def test_encode_status_of_a_function_result_status_and_result_of():
    from funboost.engine.status import FunctionResultStatus
    st = FunctionResultStatus(queue_name="q", task_id="t1", params={})
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError as exc:
        st.set_error(exc)
    st.finish()
    d = decode_status(encode_status(st))
    assert d["task_id"] == "t1" and d["success"] is False and d["exception_type"] == "ZeroDivisionError"
    with pytest.raises(RemoteTaskError) as info:
        result_of(d)
    assert info.value.exception_msg == "boom" and info.value.status["task_id"] == "t1"
    assert result_of(decode_status(encode_status({"success": True, "result": [1, "a"]}))) == [1, "a"]
    assert result_of(decode_status(encode_status(7))) == 7  # a bare value is a successful result
    assert decode_status(b'{"success": true, "result": NaN}')["success"] is True  # json's NaN accepted


# ---------------------------------------------------------------------- QueueServer handlers
def envelope(i: int, **kw: Any) -> str:
    return json.dumps({"x": i, **kw, "extra": {"task_id": f"t{i}"}})


def test_handlers_refuse_unknown_queue_bad_bodies_and_full_buffer():
    server = QueueServer()
    with pytest.raises(UnknownQueue):
        server.handle_publish("nope", [envelope(1)])
    q = server.register("q", capacity=2)
    with pytest.raises(BadRequest, match="not valid JSON"):
        server.handle_publish("q", [envelope(1), "not json"])
    with pytest.raises(BadRequest, match="JSON object"):
        server.handle_publish("q", ["[1, 2]"])
    assert q.counts() == (0, 0, 0)  # a bad batch is refused as a whole
    assert server.handle_publish("q", [envelope(1), envelope(2), envelope(3)]) == 2
    with pytest.raises(Backpressure):
        server.handle_publish("q", [envelope(4)])
    assert server.stats("q") == (2, 0, 2)
    assert server.purge("q") == 2


def test_handle_call_through_the_buffer_and_its_deadline():
    server = QueueServer()
    q = server.register("q", capacity=10)

    def serve_one() -> None:
        [d] = q.take(1, 30)
        d.reply({"success": True, "result": d.body["x"] * 2})
        q.finish([d.tag])

    t = threading.Thread(target=serve_one)
    t.start()
    assert decode_status(server.handle_call("q", envelope(21), 30))["result"] == 42
    t.join(10)
    with pytest.raises(CallDeadlineExceeded):
        server.handle_call("q", envelope(1), 0.05)
    assert q.take(10, 0) == []  # the caller gave up: the call is not run any more


def test_finish_without_reply_fails_the_call_and_close_fails_waiting_calls():
    server = QueueServer()
    q = server.register("q", capacity=10)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", server.handle_call("q", envelope(1), 30)))
    t.start()
    [d] = q.take(1, 30)
    q.finish([d.tag])
    t.join(10)
    assert decode_status(out["r"])["exception_type"] == "NoResult"
    t = threading.Thread(target=lambda: out.__setitem__("r", server.handle_call("q", envelope(2), 30)))
    t.start()
    assert wait_for(lambda: q.counts()[0] == 1)
    assert server.unregister("q") is True  # the last queue: the server hosts nothing now
    t.join(10)
    assert decode_status(out["r"])["exception_type"] == "ConsumerClosed"


def test_server_registry_shares_one_server_per_port_and_stops_it_with_the_last_queue():
    started: list = []
    stopped: list = []

    class Server(QueueServer):
        def __init__(self) -> None:
            super().__init__(config_key="k")
            self.port = 40000 + len(started)
            started.append(self)

        def stop(self, grace: float = 1.0) -> None:
            stopped.append(self)

    reg: ServerRegistry = ServerRegistry("test")
    s1, qa = reg.acquire("127.0.0.1", 0, "k", Server, "a", 5)
    s2, qb = reg.acquire("127.0.0.1", 0, "k", Server, "b", 5)
    assert s1 is s2 and len(started) == 1 and reg.lookup("127.0.0.1", s1.port) is s1
    with pytest.raises(ValueError, match="other security"):
        reg.acquire("127.0.0.1", s1.port, "other", Server, "c", 5)
    reg.release(s1, "a")
    assert not stopped
    reg.release(s1, "b")
    assert stopped == [s1] and reg.lookup("127.0.0.1", s1.port) is None


# ---------------------------------------------------------------------- InlineRunner with the engine
def test_inline_runner_runs_calls_in_the_handler_thread_unless_paused(qname):
    from funboost import BoosterParams, boost
    from funboost.engine.consumer import Consumer
    threads: list = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", concurrent_num=3, state_backend="memory"))
    def double(x: int) -> int:
        threads.append(threading.current_thread())
        return 2 * x

    c = Consumer(double)
    try:
        runner = InlineRunner.for_consumer(c)
        assert runner is not None and runner.host is c
        server = QueueServer()
        q = server.register(qname, 10)
        q.inline = runner
        body = json.dumps({"x": 5, "extra": {"task_id": "t5", "publish_time": time.time()}})
        assert decode_status(server.handle_call(qname, body, 30))["result"] == 10
        assert threads == [threading.current_thread()]
        # (the engine acks through its own broker: here the memory broker, in a transport the ServingBroker
        # that owns ``q``)
        # the consumer's 3 slots all taken (its pool's tasks): buffered instead
        assert all(c.reserve_slot() for _ in range(3)) and not c.reserve_slot()
        assert runner.try_run(q, ({"x": 2}, None), PendingCall()) is False
        for _ in range(3):
            c.executor.release_slot()
        c.paused = True
        assert runner.try_run(q, ({"x": 1}, None), PendingCall()) is False  # paused: buffered instead
    finally:
        c.stop(timeout=1)


def test_a_call_whose_run_ends_in_a_requeue_is_never_answered_as_a_success_with_none(qname):
    """ExceptionForRequeue in a sync_call run inline with a deadline (what tcp and http do): the reply was
    encode_status(None) == {"success": true, "result": null}, a success the function never returned."""
    from funboost import BoosterParams, ExceptionForRequeue, boost
    from funboost.engine.consumer import Consumer

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", concurrent_num=2, state_backend="memory"))
    def once_requeued(x: int) -> int:
        raise ExceptionForRequeue("again")

    c = Consumer(once_requeued)
    try:
        server = QueueServer()
        q = server.register(qname, 10)
        q.inline = InlineRunner.for_consumer(c)
        body = json.dumps({"x": 5, "extra": {"task_id": "t-rq", "publish_time": time.time()}})
        # (here the engine requeues through the memory broker, so nothing settles q's delivery: the call ends at
        # its deadline; in a transport the copy goes back to q with the call, which its next run answers:
        # funboost.testing.serving.assert_a_call_is_answered_by_the_run_after_a_requeue)
        try:
            reply = server.handle_call(qname, body, 1.0, lambda: None)
        except CallDeadlineExceeded:
            return
        st = decode_status(reply)
        assert st.get("success") is not True, st
    finally:
        c.stop(timeout=1)


# ---------------------------------------------------------------------- TransportClient failover
class LoopEndpoint(Endpoint):
    __slots__ = ("server", "up", "probes")

    def __init__(self, address: str, server: QueueServer) -> None:
        super().__init__(address)
        self.server = server
        self.up = True
        self.probes = 0


class LoopbackClient(TransportClient[LoopEndpoint]):
    """An in-process framing: every request is a direct call of the endpoint's QueueServer handler."""

    transport_name = "loopback"

    def _check(self, ep: LoopEndpoint) -> None:
        if not ep.up:
            raise EndpointUnreachable(f"{ep.address}: down", "DOWN")

    def _refused(self, ep: LoopEndpoint, err: RequestError) -> Exception:
        if isinstance(err, (UnknownQueue, Backpressure)):
            return EndpointRefused(f"{ep.address}: {type(err).__name__}: {err}")
        if isinstance(err, CallDeadlineExceeded):
            return AttemptTimedOut(f"{ep.address}: {err}")
        return TransportError(str(err), code=type(err).__name__)

    def send_publish(self, ep, queue_name, bodies):
        self._check(ep)
        try:
            return ep.server.handle_publish(queue_name, bodies)
        except RequestError as err:
            raise self._refused(ep, err) from err

    def send_call(self, ep, request, timeout):
        self._check(ep)
        try:
            return ep.server.handle_call(request[0], request[1], timeout)
        except RequestError as err:
            raise self._refused(ep, err) from err

    def send_stats(self, ep, queue_name):
        self._check(ep)
        try:
            return ep.server.stats(queue_name)[:2]
        except RequestError as err:
            raise AttemptFailed(str(err)) from err

    def send_purge(self, ep, queue_name):
        self._check(ep)
        try:
            return ep.server.purge(queue_name)
        except RequestError as err:
            raise AttemptFailed(str(err)) from err

    def probe(self, ep, timeout):
        ep.probes += 1
        return ep.up


def make_client(*servers: QueueServer, **kw: Any) -> LoopbackClient:
    eps = [LoopEndpoint(f"loop:{i}", s) for i, s in enumerate(servers)]
    opts = {"max_body": 1000, "publish_timeout": 2.0, "health_check_interval": 0.02, **kw}
    return LoopbackClient(eps, **opts)


def test_publish_fails_over_marks_down_and_the_prober_revives():
    a, b = QueueServer(), QueueServer()
    qa, qb = a.register("q", 100), b.register("q", 100)
    client = make_client(a, b)
    ep_a = client.endpoints[0]
    ep_a.up = False
    try:
        for i in range(6):
            client.publish("q", [envelope(i)])
        assert qa.counts()[0] == 0 and qb.counts()[0] == 6  # everything went to the live consumer
        assert ep_a.down_until > 0 and ep_a.probes >= 0
        ep_a.up = True
        assert wait_for(lambda: ep_a.down_until == 0.0)  # the health prober saw it healthy again
        for i in range(6):
            client.publish("q", [envelope(i)])
        assert qa.counts()[0] > 0  # round robin includes it again
        assert client.stats("q") == (12, 0)
        assert client.purge("q") == 12
    finally:
        client.close()


def test_publish_splits_on_backpressure_and_gives_up_after_publish_timeout():
    a = QueueServer()
    qa = a.register("q", 3)
    client = make_client(a, publish_timeout=0.2)
    try:
        with pytest.raises(NoConsumerAvailable, match="Backpressure"):
            client.publish("q", [envelope(i) for i in range(5)])
        assert qa.counts()[0] == 3  # what fitted was accepted
        with pytest.raises(TransportError, match="too large|exceeds"):
            client.publish("q", ["x" * 2000])
    finally:
        client.close()
    nobody = make_client(QueueServer(), publish_timeout=0.1)
    assert nobody.stats("q") is None and nobody.purge("q") == -1  # unknown, never a fake 0


def test_call_result_remote_error_timeout_and_no_double_run_after_a_broken_connection():
    a = QueueServer()
    qa = a.register("q", 10)
    client = make_client(a)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for d in qa.take(4, 0.05):
                if d.body.get("fail"):
                    d.reply({"success": False, "exception_type": "ValueError", "exception_msg": "bad"})
                elif not d.body.get("hang"):
                    d.reply({"success": True, "result": d.body["x"] + 1})
                qa.finish([d.tag]) if not d.body.get("hang") else None

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert client.call("q", envelope(1), 10) == 2
        with pytest.raises(RemoteTaskError, match="ValueError"):
            client.call("q", envelope(1, fail=True), 10)
        with pytest.raises(RpcTimeout):
            client.call("q", envelope(1, hang=True), 0.2)
    finally:
        stop.set()
        t.join(10)

    class Broken(LoopbackClient):
        sent = 0

        def send_call(self, ep, request, timeout):
            Broken.sent += 1
            raise EndpointUnreachable(f"{ep.address}: reset mid-call", "RESET", maybe_processed=True)

    b1, b2 = QueueServer(), QueueServer()
    b1.register("q", 10), b2.register("q", 10)
    broken = Broken([LoopEndpoint("l0", b1), LoopEndpoint("l1", b2)], max_body=1000, publish_timeout=2.0,
                    health_check_interval=0.02)
    try:
        with pytest.raises(TransportError, match="failed during sync_call"):
            broken.call("q", envelope(1), 10)
        assert Broken.sent == 1  # it may have run: never sent to the second consumer
    finally:
        broken.close()
        client.close()


def test_put_reads_each_items_priority_and_eta():
    from funboost.plugins.broker import OutgoingMessage
    q: LocalQueue[OutgoingMessage] = LocalQueue("q")
    msgs = [OutgoingMessage(body="a"), OutgoingMessage(body="b", priority=3),
            OutgoingMessage(body="c", eta=time.time() + 60), OutgoingMessage(body="d", eta=time.time() - 1)]
    q.put(msgs)
    assert q.counts() == (3, 0, 1)
    assert [d.body.body for d in q.take(10, 0)] == ["b", "a", "d"]


# ---------------------------------------------------------------------- security and option helpers
def test_loopback_detection_and_token_requirement():
    from funboost.transport.security import InsecureBind, is_loopback_host, require_token_for_bind, token_matches
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.1", "no-such-host.invalid"):
        assert not is_loopback_host(host), host
    require_token_for_bind("http", "127.0.0.1", None)
    require_token_for_bind("http", "0.0.0.0", "secret")
    require_token_for_bind("tcp", "0.0.0.0", None, tls_client_auth=True)
    with pytest.raises(InsecureBind, match="FUNBOOST_HTTP_TOKEN"):
        require_token_for_bind("http", "0.0.0.0", None)
    assert token_matches("Bearer t", b"Bearer t") and token_matches(b"Bearer t", b"Bearer t")
    assert not token_matches("Bearer u", b"Bearer t") and not token_matches(None, b"Bearer t")


def test_option_helpers(monkeypatch):
    from funboost.transport.options import env_float, env_int, env_list, env_str, local_target, normalize_addresses
    monkeypatch.setenv("FB_T_A", "a:1, b:2,")
    monkeypatch.setenv("FB_T_I", "7")
    monkeypatch.setenv("FB_T_E", "")
    assert env_list("FB_T_A") == ["a:1", "b:2"] and env_list("FB_T_UNSET") is None
    assert env_int("FB_T_I", 1) == 7 and env_int("FB_T_E", 3) == 3 and env_float("FB_T_UNSET", 0.5) == 0.5
    assert env_str("FB_T_E") is None
    assert normalize_addresses([" a:1 ", ""]) == ["a:1"] and normalize_addresses([]) is None
    with pytest.raises(ValueError):
        normalize_addresses(["nohostport"])
    assert local_target("0.0.0.0", 5) == "127.0.0.1:5" and local_target("::1", 5) == "[::1]:5"


def test_transport_options_read_their_prefixed_environment(monkeypatch):
    from typing import ClassVar, Optional

    from funboost.transport.options import MutualTlsTransportOptions, TransportOptions

    class Opts(MutualTlsTransportOptions):
        env_prefix: ClassVar[str] = "FB_T_"
        env_names: ClassVar[dict[str, str]] = {"tls_cert_file": "FB_T_CERT", "tls_key_file": "FB_T_KEY"}
        env_skip: ClassVar[frozenset[str]] = frozenset({"health_check_interval"})
        port: int = 1234
        extra_list: Optional[list[str]] = None

    assert Opts().port == 1234 and Opts().addresses is None and Opts().tls is False
    monkeypatch.setenv("FB_T_PORT", "99")
    monkeypatch.setenv("FB_T_ADDRESSES", "a:1, b:2")
    monkeypatch.setenv("FB_T_TLS", "yes")
    monkeypatch.setenv("FB_T_PUBLISH_TIMEOUT", "2.5")
    monkeypatch.setenv("FB_T_HEALTH_CHECK_INTERVAL", "9")  # skipped
    monkeypatch.setenv("FB_T_EXTRA_LIST", "x,y")  # a subclass's own field reads it too
    monkeypatch.setenv("FB_T_CERT", "c.pem")
    monkeypatch.setenv("FB_T_KEY", "k.pem")
    monkeypatch.setenv("FB_T_TOKEN", "")  # empty: unset
    o = Opts()
    assert (o.port, o.addresses, o.tls, o.publish_timeout, o.health_check_interval, o.extra_list) == \
        (99, ["a:1", "b:2"], True, 2.5, 0.5, ["x", "y"])
    assert (o.tls_cert_file, o.tls_key_file, o.token) == ("c.pem", "k.pem", None)
    assert o.client_tls and o.target_addresses() == ["a:1", "b:2"]
    assert Opts(port=5, token=None).port == 5  # what is given wins over the environment
    monkeypatch.setenv("FB_T_ADDRESSES", "nohostport")  # env values get the checks given values get
    with pytest.raises(ValueError):
        Opts()
    monkeypatch.delenv("FB_T_ADDRESSES")
    monkeypatch.delenv("FB_T_KEY")
    with pytest.raises(ValueError, match="tls_key_file"):
        Opts()
    assert TransportOptions(host="0.0.0.0", port=7).target_addresses() == ["127.0.0.1:7"]


def test_parse_envelope_takes_a_parsed_dict():
    from funboost.transport.server import parse_envelope
    d = {"x": 1}
    assert parse_envelope(d) is d
    with pytest.raises(BadRequest, match="#3"):
        parse_envelope([1], 3)  # type: ignore[arg-type]


def test_serving_broker_declares_honest_capabilities():
    from funboost.transport.broker import ServingBroker
    caps = ServingBroker.capabilities
    assert not caps.persistent and not caps.at_least_once
    assert caps.request_response and caps.cross_process and caps.queue_size == "approximate"
    assert caps.needs_serving_consumer


# ---------------------------------------------------------------- HandlerThreads
def test_handler_threads_a_job_never_waits_behind_a_blocked_one_while_threads_are_free():
    """Two jobs submitted back to back after a thread went idle: the second must get a thread of its own.
    (Counting the idle thread for both, without claiming it, left the second behind the first, which
    blocked: a sync_call behind a call waiting for the user's function. CI found it in funboost-tcp.)"""
    threads = HandlerThreads(1 << 30, "test-ht")
    gate = threading.Event()
    try:
        for _ in range(20):
            done = threading.Event()
            threads.submit(gate.wait, 30)  # blocks until the end of the test
            threads.submit(done.set)
            assert done.wait(5), "the second job waited behind the blocked first one"
        assert threads._threads <= 40
    finally:
        gate.set()
        threads.shutdown()


def test_handler_threads_at_size_jobs_wait_for_a_free_thread_and_all_run():
    threads = HandlerThreads(3, "test-ht-cap")
    gate, lock, ran = threading.Event(), threading.Lock(), []

    def job(i: int) -> None:
        gate.wait(30)
        with lock:
            ran.append(i)

    try:
        for i in range(50):
            threads.submit(job, i)
        assert threads._threads == 3
        gate.set()
        assert wait_until(lambda: len(ran) == 50, 10)
        # after the backlog drained, every thread is free again and counted once
        assert wait_until(lambda: threads._idle == 3 and threads._backlog == 0, 5)
        gate.clear()
        done = threading.Event()
        threads.submit(gate.wait, 30)
        threads.submit(gate.wait, 30)
        threads.submit(done.set)
        assert done.wait(5) and threads._threads == 3
    finally:
        gate.set()
        threads.shutdown()
