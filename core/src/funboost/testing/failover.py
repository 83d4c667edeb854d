"""Failover and health checks of the server transports (grpc, tcp, http), one suite for all of them.

Their balancing, failover, backoff and health probing are core's
(:class:`funboost.transport.client.TransportClient`), so the behaviour is tested once, here, against each
kind's real framing and real consumers (``@boost`` in subprocesses that the tests SIGKILL). A plugin runs
it by importing the tests into one of its test modules and naming its kind::

    from funboost.testing.failover import *  # noqa: F401,F403 - the shared tests, collected here

    @pytest.fixture
    def failover_kind() -> str:
        return "TCP"

The kind's options must have ``addresses``, ``publish_timeout`` and ``health_check_interval``, its broker a
``health()`` method, and its errors subclass :mod:`funboost.transport.errors`.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Optional

import pytest

from funboost.exceptions import RpcTimeout
from funboost.plugins.broker import Broker, OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost.testing.contract.base import wait_until
from funboost.testing.servers import free_port
from funboost.transport.errors import NoConsumerAvailable, RemoteTaskError, TransportError

__all__ = ["ConsumerProcess", "free_port", "failover_queue", "test_round_robin_then_failover_after_kill",
           "test_revived_consumer_is_used_again", "test_remote_errors_come_back",
           "test_server_killed_mid_call_fails_the_caller_within_its_timeout",
           "test_no_consumer_serving_is_a_clear_error",
           "test_single_address_sync_call_waits_for_a_consumer_that_starts_later",
           "test_a_push_to_a_stalled_consumer_is_not_sent_again"]


class ConsumerProcess:
    """:mod:`funboost.testing.serving_consumer` in a subprocess: the real engine serving ``queue`` with
    ``kind`` on ``port``."""

    def __init__(self, kind: str, queue: str, port: int, extra: Optional[dict] = None, lifetime: float = 120.0) -> None:
        env = dict(os.environ, FUNBOOST_LOG_TO_CONSOLE="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "funboost.testing.serving_consumer", kind, queue, str(port),
             json.dumps(extra or {}), str(lifetime)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, errors = self.proc.stdout, self.proc.stderr
        assert out is not None and errors is not None
        ready, _, _ = select.select([out], [], [], 60.0)
        line = out.readline() if ready else ""  # READY, or "" if it died / hung
        if not line.startswith("READY"):
            err = errors.read() if self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"{kind} consumer process did not start: {line!r} {err}")
        self.address = line.split()[1]
        self.pid = int(line.split()[2])

    def kill(self) -> None:
        """SIGKILL (no goodbye to the publishers) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def failover_queue() -> str:
    return f"test_failover_{uuid.uuid4().hex[:10]}"


def _publisher(kind: str, queue: str, addresses: list[str], **opts: Any) -> Broker:
    cls = resolve_broker_kind(kind)
    return cls(queue, cls.parse_options({"addresses": addresses, "health_check_interval": 0.1, **opts}))


def _pid(broker: Broker, x: int) -> int:
    return broker.sync_call(json.dumps({"x": x}), timeout=20)["pid"]


def _until_the_publisher_sees_it_gone(pub: Broker, address: str) -> None:
    """Wait until the publisher's own probe of ``address`` fails. A request written to a kept-alive connection
    in the moment its peer died cannot be told from one the peer received (grpc: "Stream removed"), so a
    sync_call there ends in an error rather than run twice; right after ``kill`` that depends on how soon the
    client's I/O noticed the close (CI, loaded host). After the probe the dead address refuses connections,
    which every kind retries elsewhere."""
    assert wait_until(lambda: pub.health()[address] == "UNREACHABLE", 10)  # type: ignore[attr-defined]


def test_round_robin_then_failover_after_kill(failover_kind: str, failover_queue: str) -> None:
    a = ConsumerProcess(failover_kind, failover_queue, free_port())
    b = ConsumerProcess(failover_kind, failover_queue, free_port())
    try:
        pub = _publisher(failover_kind, failover_queue, [a.address, b.address], publish_timeout=5)
        assert {_pid(pub, i) for i in range(6)} == {a.pid, b.pid}  # balanced across both
        assert pub.health() == {a.address: "SERVING", b.address: "SERVING"}  # type: ignore[attr-defined]

        a.kill()
        _until_the_publisher_sees_it_gone(pub, a.address)
        # every call still succeeds, on the survivor: a request never sent to the dead consumer (refused
        # connection) is retried elsewhere
        assert {_pid(pub, i) for i in range(10)} == {b.pid}
        for i in range(10):  # fire-and-forget pushes fail over too
            pub.publish([OutgoingMessage(body=json.dumps({"x": i}))])
        health = pub.health()  # type: ignore[attr-defined]
        assert health[a.address] == "UNREACHABLE" and health[b.address] == "SERVING"
        dead = next(ep for ep in pub.client.endpoints if ep.address == a.address)  # type: ignore[attr-defined]
        assert dead.down_until > 0  # marked down: skipped rather than tried first every other call
    finally:
        a.kill()
        b.kill()


def test_revived_consumer_is_used_again(failover_kind: str, failover_queue: str) -> None:
    port_a = free_port()
    a = ConsumerProcess(failover_kind, failover_queue, port_a)
    b = ConsumerProcess(failover_kind, failover_queue, free_port())
    try:
        pub = _publisher(failover_kind, failover_queue, [a.address, b.address])
        assert {_pid(pub, i) for i in range(4)} == {a.pid, b.pid}  # connections to both are open
        a.kill()
        _until_the_publisher_sees_it_gone(pub, a.address)
        assert {_pid(pub, i) for i in range(4)} == {b.pid}
        a = ConsumerProcess(failover_kind, failover_queue, port_a)  # same address, new process
        # the health prober sees it serving again and round robin includes it
        assert wait_until(lambda: _pid(pub, 1) == a.pid, 20)
    finally:
        a.kill()
        b.kill()


def test_remote_errors_come_back(failover_kind: str, failover_queue: str) -> None:
    a = ConsumerProcess(failover_kind, failover_queue, free_port())
    try:
        pub = _publisher(failover_kind, failover_queue, [a.address])
        assert pub.sync_call(json.dumps({"x": 21}), timeout=20)["doubled"] == 42
        with pytest.raises(RemoteTaskError) as e:
            pub.sync_call(json.dumps({"fail": "boom"}), timeout=20)
        assert e.value.exception_type == "ZeroDivisionError" and e.value.exception_msg == "boom"
        assert e.value.status["pid"] == a.pid
        with pytest.raises(RpcTimeout):  # the function outlives the caller's timeout
            pub.sync_call(json.dumps({"sleep": 5}), timeout=0.5)
    finally:
        a.kill()


def test_server_killed_mid_call_fails_the_caller_within_its_timeout(failover_kind: str, failover_queue: str) -> None:
    """A call the consumer took, then died on, is not silently re-run elsewhere (it may have had effects):
    the caller is told, well before its own timeout."""
    a = ConsumerProcess(failover_kind, failover_queue, free_port())
    b = ConsumerProcess(failover_kind, failover_queue, free_port())
    try:
        pub = _publisher(failover_kind, failover_queue, [a.address, b.address])
        pub_a = _publisher(failover_kind, failover_queue, [a.address])  # the slow call goes to a
        out: dict = {}

        def call() -> None:
            t0 = time.monotonic()
            try:
                pub_a.sync_call(json.dumps({"sleep": 30}), timeout=20)
            except Exception as e:  # noqa: BLE001 - inspected below
                out["e"] = e
            out["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=call)
        t.start()
        # the consumer has taken it once its buffer / inline runner shows it in flight
        assert wait_until(lambda: pub_a.queue_size().in_flight == 1, 20)
        a.kill()
        t.join(25)
        assert not t.is_alive()
        assert isinstance(out.get("e"), TransportError) and out["e"].code == "UNAVAILABLE", out
        assert out["elapsed"] < 20
        assert _pid(pub, 2) == b.pid  # the other one still works
    finally:
        a.kill()
        b.kill()


def test_no_consumer_serving_is_a_clear_error(failover_kind: str, failover_queue: str) -> None:
    port = free_port()  # nothing listens here
    address = f"127.0.0.1:{port}"
    pub = _publisher(failover_kind, failover_queue, [address], publish_timeout=0.5)
    with pytest.raises(NoConsumerAvailable) as e:
        pub.publish([OutgoingMessage(body='{"x": 1}')])
    assert failover_queue in str(e.value) and address in str(e.value) and e.value.code == "UNAVAILABLE"
    with pytest.raises(NoConsumerAvailable):
        pub.sync_call('{"x": 1}', timeout=10)
    assert pub.queue_size().ready is None  # unknown, never a fake 0

    # a consumer that serves another queue on that address does not take it either
    a = ConsumerProcess(failover_kind, f"{failover_queue}_other", port)
    try:
        with pytest.raises(NoConsumerAvailable) as e:
            pub.publish([OutgoingMessage(body='{"x": 1}')])
        assert failover_queue in str(e.value)
    finally:
        a.kill()


def test_single_address_sync_call_waits_for_a_consumer_that_starts_later(failover_kind: str,
                                                                          failover_queue: str) -> None:
    """With one address, sync_call's first attempt takes a fast path; a refused attempt (nothing listening
    yet) must still be retried on that address until a consumer serves it, within publish_timeout."""
    port = free_port()
    pub = _publisher(failover_kind, failover_queue, [f"127.0.0.1:{port}"], publish_timeout=30)
    out: dict = {}

    def call() -> None:
        try:
            out["r"] = pub.sync_call('{"x": 3}', timeout=30)
        except Exception as e:  # noqa: BLE001 - inspected below
            out["e"] = e

    t = threading.Thread(target=call)
    t.start()
    ep = pub.client.endpoints[0]  # type: ignore[attr-defined]
    a = None
    try:
        assert wait_until(lambda: ep.down_until > 0 or not t.is_alive(), 10)  # the first attempt was refused
        a = ConsumerProcess(failover_kind, failover_queue, port)
        t.join(30)
        assert not t.is_alive()
        assert out.get("r", {}).get("doubled") == 6, out
    finally:
        if a is not None:
            a.kill()
        t.join(35)


def test_a_push_to_a_stalled_consumer_is_not_sent_again(failover_kind: str, failover_queue: str, tmp_path: Any) -> None:
    """A consumer that does not answer a publish in time (here: SIGSTOPped) may still read it from its socket
    buffer and run it when it resumes. Sending the batch again (to it or to another consumer) ran the task
    twice while ``push`` reported a failure; now ``push`` raises ``DEADLINE_EXCEEDED`` at once: no task runs
    twice (a timed-out one runs once when the consumer resumes, or never where the transport cancels it, as
    gRPC does), and every push that returned runs."""
    a = ConsumerProcess(failover_kind, failover_queue, free_port())
    b = ConsumerProcess(failover_kind, failover_queue, free_port())
    marks = tmp_path / "runs"
    cls = resolve_broker_kind(failover_kind)
    attempt = "request_timeout" if "request_timeout" in cls.options_model.model_fields else "rpc_timeout"
    try:
        pub = _publisher(failover_kind, failover_queue, [a.address, b.address], publish_timeout=5, **{attempt: 1})
        assert {_pid(pub, i) for i in range(6)} == {a.pid, b.pid}  # connections to both are open
        # round robin sends one of the first two pushes to the stalled consumer only if neither is marked
        # down: an attempt that failed above on a loaded host (CI) marks it down until a probe clears that
        endpoints = pub.client.endpoints  # type: ignore[attr-defined]
        assert wait_until(lambda: all(ep.down_until == 0 for ep in endpoints), 10)
        os.kill(a.pid, signal.SIGSTOP)
        pushed, errors = [], []
        try:
            for x in range(4):  # round robin: some of them go to the stalled consumer first
                try:
                    pub.publish([OutgoingMessage(body=json.dumps({"x": x, "mark": str(marks)}))])
                    pushed.append(str(x))
                except TransportError as exc:
                    errors.append(exc)
            marks_down = {ep.address: ep.down_until for ep in endpoints}
            assert errors and all(e.code == "DEADLINE_EXCEEDED" and "not sent again" in str(e) for e in errors), \
                (errors, pushed, a.address, marks_down)
        finally:
            os.kill(a.pid, signal.SIGCONT)

        def runs() -> list[str]:
            return marks.read_text().split() if marks.exists() else []
        assert wait_until(lambda: set(pushed) <= set(runs()), 20), (pushed, runs())
        # a copy sent again, or a timed-out push run late, shows up within this once the consumer resumed
        assert pub.sync_call(json.dumps({"x": 1}), timeout=20)  # type: ignore[attr-defined]
        time.sleep(0.5)
        got = runs()
        assert len(got) == len(set(got)), f"a task ran twice: {got}"
    finally:
        a.kill()
        b.kill()
