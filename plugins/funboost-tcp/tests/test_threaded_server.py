"""The plain-TCP server's leader/follower threads (funboost_tcp.threaded): calls on one connection run
concurrently and never hold up its other requests, call slots, idle connections parked in the watcher,
stop() while threads are blocked reading, and the engine's calls served by the reading thread itself."""
import json
import threading
import time
from typing import Optional

import pytest
from funboost import BoosterParams, boost
from funboost.testing import wait_until

from funboost_tcp import TcpBroker
from funboost_tcp import protocol as p
from funboost_tcp import threaded
from support import RawClient, free_port


def _gate_booster(queue_name: str, port: int, gate: threading.Event, started: Optional[threading.Event] = None,
                  **cfg):
    """wait(x) -> x once ``gate`` is set (x < 0: at once); ``started`` is set when a call enters the function."""

    @boost(BoosterParams(queue_name=queue_name, broker_kind="TCP", broker_exclusive_config={"port": port, **cfg},
                         concurrent_num=16, max_retry_times=0, state_backend="memory", log_to_console=False))
    def wait(x: int) -> int:
        if x >= 0:
            if started is not None:
                started.set()
            assert gate.wait(30)
        return x
    return wait


def _call(queue_name: str, x: int) -> dict:
    return {"queue": queue_name, "timeout": 30, "body": {"x": x}}


def _threads(prefix: str) -> list:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_calls_on_one_connection_run_concurrently_and_other_requests_are_not_held_up(queue_name):
    port, gate = free_port(), threading.Event()
    booster = _gate_booster(queue_name, port, gate)
    booster.consume()
    raw = RawClient(port)
    try:
        waiting = [raw.send(p.CALL, _call(queue_name, i)) for i in range(5)]  # all block on the gate
        # the same connection keeps serving: a quick call and a PING while 5 calls of it run
        quick = raw.send(p.CALL, _call(queue_name, -7))
        rid, frame_type, reply = raw.read()
        assert (rid, frame_type, reply["result"]) == (quick, p.OK, -7)
        assert raw.request(p.PING, {"queue": queue_name}) == (p.OK, {"serving": True})
        gate.set()
        replies = {}
        for _ in waiting:
            rid, frame_type, reply = raw.read()
            replies[rid] = reply["result"]
        assert replies == {rid: i for i, rid in enumerate(waiting)}
        # sequential calls afterwards: served by the thread that reads (no hand-off needed)
        for i in range(50):
            assert raw.request(p.CALL, _call(queue_name, -i))[1]["result"] == -i
    finally:
        gate.set()
        raw.close()
        booster.stop_consume(10)


def test_call_threads_bounds_the_calls_running_at_once_and_the_others_wait_their_turn(queue_name):
    port, gate = free_port(), threading.Event()
    booster = _gate_booster(queue_name, port, gate, call_threads=2)
    booster.consume()
    clients = [RawClient(port) for _ in range(3)]
    try:
        ids = [c.send(p.CALL, _call(queue_name, i)) for i, c in enumerate(clients)]
        server = TcpBroker.registry.lookup("127.0.0.1", port)
        listener = server._threaded
        assert wait_until(lambda: listener._running == 2 and len(listener._waiting) == 1, 10)
        # the connection whose call waits for a slot still answers its other requests
        assert clients[2].request(p.PING, {}) == (p.OK, {"serving": True})
        gate.set()
        for i, c in enumerate(clients):
            rid, frame_type, reply = c.read()
            assert (rid, frame_type, reply["result"]) == (ids[i], p.OK, i)
        assert wait_until(lambda: listener._running == 0 and not listener._waiting, 10)
    finally:
        gate.set()
        for c in clients:
            c.close()
        booster.stop_consume(10)


def test_an_idle_connection_is_parked_in_the_watcher_and_served_again(queue_name, monkeypatch):
    monkeypatch.setattr(threaded, "IDLE_PARK", 0.2)
    port = free_port()
    consumer = TcpBroker(queue_name, TcpBroker.parse_options({"port": port}))
    consumer.serve()
    raw = RawClient(port)
    try:
        assert raw.request(p.PING, {}) == (p.OK, {"serving": True})
        conn = next(iter(consumer._server._threaded._conns.values()))
        assert wait_until(lambda: conn.state == threaded._WATCHED, 10)  # no thread reads it any more
        # half a frame, a pause (the reader parks again in the middle of it), then the rest
        frame = p.frame(raw.next_id, p.PUBLISH, json.dumps({"queue": queue_name, "bodies": [{"x": 1}]}).encode())
        raw.next_id += 1
        raw.sock.sendall(frame[:5])
        time.sleep(0.5)
        raw.sock.sendall(frame[5:])
        assert raw.read()[1:] == (p.OK, {"accepted": 1})
        assert raw.request(p.STATS, {"queue": queue_name})[1]["ready"] == 1
    finally:
        raw.close()
        consumer.close()


def test_stop_wakes_threads_blocked_reading_and_closes_the_connections(queue_name):
    port, gate, started = free_port(), threading.Event(), threading.Event()
    booster = _gate_booster(queue_name, port, gate, started)
    booster.consume()
    idle, busy = RawClient(port), RawClient(port)
    try:
        assert idle.request(p.PING, {}) == (p.OK, {"serving": True})  # its reader now waits in recv
        busy.send(p.CALL, _call(queue_name, 1))  # a call under way (waits on the gate)
        server = TcpBroker.registry.lookup("127.0.0.1", port)
        assert wait_until(lambda: server._threaded._running == 1, 10)
        # in the function, not just in the server's call thread: a call stopped before it starts gets an
        # error reply (the consumer is stopping), which is not what this test is about (CI, 1 run in ~80)
        assert started.wait(10)
        t0 = time.monotonic()
        # a graceful stop waits for the running call within its timeout (an inline run counts as a running
        # task, as one of the engine's pool does); past it, the server closes what is still open
        booster.stop_consume(1)
        assert time.monotonic() - t0 < 5
        for name, c in (("idle", idle), ("busy", busy)):  # both connections closed by the server
            try:
                got = c.read()
            except (ConnectionError, OSError):
                continue
            pytest.fail(f"the {name} connection got a frame instead of being closed: {got!r}")
        gate.set()
        assert wait_until(lambda: not _threads(f"funboost-tcp-127.0.0.1:{port}"), 10)  # every thread ended
    finally:
        gate.set()
        idle.close()
        busy.close()


def test_a_client_that_closes_mid_call_costs_nothing_but_that_call(queue_name):
    port, gate = free_port(), threading.Event()
    booster = _gate_booster(queue_name, port, gate)
    booster.consume()
    leaving, staying = RawClient(port), RawClient(port)
    try:
        leaving.send(p.CALL, _call(queue_name, 1))
        server = TcpBroker.registry.lookup("127.0.0.1", port)
        assert wait_until(lambda: server._threaded._running == 1, 10)
        leaving.close()
        assert wait_until(lambda: server.connection_count == 1, 10)
        gate.set()  # the call ends; its reply has nowhere to go
        assert wait_until(lambda: server._threaded._running == 0, 10)
        assert staying.request(p.CALL, _call(queue_name, 3))[1]["result"] == 3
    finally:
        gate.set()
        staying.close()
        booster.stop_consume(10)
