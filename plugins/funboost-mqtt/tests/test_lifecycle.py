"""Stopping and exiting without losing messages, on the real Mosquitto:

* a consumer process stopped with SIGTERM while the queue still holds a backlog, then a new consumer:
  every task runs (with a stable ``client_id`` and with the default, a new id per process);
* a stopping consumer whose session holds more than its receive window hands all of it to another member;
* the last consumer keeps what it could not hand over (unfinished tasks, its queued share) for the next
  consumer: the same client id resumes the session, consumers with new ids take it over (once);
* a publisher process that pushes while nobody subscribes and then ends normally waits for a subscriber
  (up to ``publish_timeout``), so a consumer that starts later gets every task; past that it reports the
  drop instead of exiting silently.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until, wait_until
from funboost.testing.workers import ConsumerProcess, recording_publisher
from funboost_mqtt import MqttBroker, MqttOptions


def env(i: int) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")


def numbers(ds) -> list[int]:
    return sorted(json.loads(d.body)["i"] for d in ds)


def drain(b: MqttBroker, quiet: float) -> list:
    """Everything ``b`` receives until nothing came for ``quiet`` seconds (acked)."""
    out = []
    while True:
        got = b.fetch(100, quiet)
        if not got:
            return out
        b.ack(got)
        out += got


def sigterm(p: ConsumerProcess, timeout: float = 60) -> int:
    os.kill(p.pid, signal.SIGTERM)
    return p.proc.wait(timeout)


@pytest.mark.parametrize("stable_id", [True, False], ids=["stable_client_id", "default_client_id"])
def test_sigterm_of_the_only_consumer_then_restart_runs_every_task(mqtt_options, qname, tmp_path, stable_id):
    """The graceful stop of the last consumer must not be worse than a SIGKILL: the backlog queued in its
    session (beyond what it had received) and what it had buffered reach the next consumer."""
    n = 300
    opts = {"client_id": f"funboost-test-{qname}"} if stable_id else {}
    first = ConsumerProcess("MQTT", qname, opts, str(tmp_path / "first"), concurrency=10, task_seconds=0.02)
    second = None
    try:
        recording_publisher("MQTT", qname, {}).push_many(range(n))
        # stopped with most of the queue still waiting at the broker (far more than receive_maximum)
        wait_until(lambda: first.done() >= 30, 60, message="the first consumer ran 30 tasks")
        assert sigterm(first) == 0
        ran_first = first.runs()
        assert len(ran_first) < n - 100, "the first consumer ran nearly everything: no backlog was left"
        second = ConsumerProcess("MQTT", qname, opts, str(tmp_path / "second"), concurrency=10, task_seconds=0.0)
        wait_until(lambda: set(ran_first) | set(second.runs()) == set(range(n)), 60,
                   message=f"all {n} tasks ran after the restart "
                           f"(first {len(ran_first)}, second {len(second.runs())})")
        assert all(c == 1 for c in second.runs().values()), "the new consumer ran a task twice"
    finally:
        first.stop()
        if second is not None:
            assert sigterm(second) == 0
            second.stop()


def test_stopping_consumer_hands_its_whole_session_to_another_member(mqtt_options, qname):
    """A consumer's session holds its share beyond the receive window (queued at the broker, never sent to
    the client yet): a graceful stop must hand that over too, not end the session with it."""
    stopping = MqttBroker(qname, MqttOptions(**{**mqtt_options.model_dump(), "receive_maximum": 5}))
    other = MqttBroker(qname, MqttOptions(**mqtt_options.model_dump()))
    pub = MqttBroker(qname, MqttOptions(**mqtt_options.model_dump()))
    try:
        stopping.fetch(1, 0.05)
        other.fetch(1, 0.05)
        pub.publish([env(i) for i in range(200)])  # ~100 each: 5 sent to `stopping`, ~95 queued for it
        ran = fetch_until(stopping, 2)
        stopping.ack(ran)
        stopping.close()
        rest = drain(other, quiet=1.5)
        assert numbers(ran + rest) == list(range(200))
    finally:
        for b in (stopping, other, pub):
            b.close()


@pytest.mark.parametrize("stable_id", [True, False], ids=["stable_client_id", "default_client_id"])
def test_last_consumer_with_unfinished_tasks_keeps_them_for_the_next(mqtt_options, qname, stable_id):
    """Tasks still running (unacknowledged) when the last consumer closes come back to the next one."""
    client_id = f"funboost-test-{qname}" if stable_id else None
    first = MqttBroker(qname, MqttOptions(**{**mqtt_options.model_dump(), "client_id": client_id}))
    pub = MqttBroker(qname, MqttOptions(**mqtt_options.model_dump()))
    try:
        first.fetch(1, 0.05)
        pub.publish([env(i) for i in range(3)])
        held = fetch_until(first, 3)  # taken by the engine, never acknowledged
        first.close()
        second = MqttBroker(qname, MqttOptions(**{**mqtt_options.model_dump(), "client_id": client_id}))
        try:
            got = fetch_until(second, 3, timeout=20)
            second.ack(got)
            assert numbers(got) == numbers(held) == [0, 1, 2]
        finally:
            second.close()
    finally:
        first.close()
        pub.close()


def test_consumers_starting_together_take_a_stopped_last_consumers_session_over_once(mqtt_options, qname):
    """The last consumer (default client id) stops with most of its share still queued at the broker; two
    consumers start at once: one takes its session over (the other leaves it to the claim), every message
    arrives, and a duplicate could only come from a take-over cut off halfway (at most one window)."""
    def consumer(**opts) -> MqttBroker:
        b = MqttBroker(qname, MqttOptions(**{**mqtt_options.model_dump(), **opts}))
        b.fetch(1, 0.0)  # subscribes
        return b

    first, pub = consumer(receive_maximum=5), MqttBroker(qname, MqttOptions(**mqtt_options.model_dump()))
    started: list[MqttBroker] = []
    try:
        pub.publish([env(i) for i in range(100)])
        ran = fetch_until(first, 2)
        first.ack(ran)
        first.close()  # the last one: keeps its session and announces it
        threads = [threading.Thread(target=lambda: started.append(consumer())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(started) == 2
        got: list = []

        def more() -> bool:
            for b in started:
                batch = b.fetch(100, 0.05)
                b.ack(batch)
                got.extend(batch)
            return set(numbers(ran + got)) == set(range(100))
        wait_until(more, 30, interval=0.0, message="every message after the take-over")
        # a duplicate only if the two claims crossed: what the dropped taker had republished, at most a window
        assert len(numbers(got)) - len(set(numbers(got))) <= MqttOptions().receive_maximum
    finally:
        for b in [first, pub, *started]:
            b.close()


PUBLISHER = textwrap.dedent("""
    import sys
    from funboost import BoosterParams, boost
    queue, timeout = sys.argv[1], float(sys.argv[2])

    @boost(BoosterParams(queue_name=queue, broker_kind="MQTT", state_backend="memory",
                         broker_exclusive_config={"publish_timeout": timeout}))
    def task(i: int) -> None: ...

    for i in range(5):
        task.push(i)  # no subscriber yet: parked
    print("pushed", flush=True)
    # the script ends normally here: the interpreter's exit must wait for a subscriber
""")


def start_publisher(queue: str, publish_timeout: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", PUBLISHER, queue, str(publish_timeout)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "FUNBOOST_NO_KEEPALIVE": "1"})
    assert p.stdout is not None and p.stdout.readline().strip() == "pushed"
    return p


def test_parked_messages_are_waited_for_at_interpreter_exit(mqtt_options, qname):
    pub = start_publisher(qname, 30)
    try:
        # the consumer subscribes only once the script has ended and the exit waits for its parked messages
        assert pub.stderr is not None
        said = ""
        while "before exiting" not in said:
            line = pub.stderr.readline()
            assert line, f"the publisher exited without waiting for its parked messages: {said!r}"
            said += line
        assert "5 parked message(s)" in said
        late = MqttBroker(qname, MqttOptions(**mqtt_options.model_dump()))
        try:
            got = fetch_until(late, 5, timeout=20)
            late.ack(got)
            assert numbers(got) == list(range(5))
        finally:
            late.close()
        assert pub.wait(20) == 0  # and it exits once they found a subscriber
    finally:
        if pub.poll() is None:
            pub.kill()
        pub.communicate()


def test_parked_messages_nobody_subscribes_to_are_reported_at_exit(mqtt_options, qname):
    """The documented limit: at exit a parked message waits ``publish_timeout``, then it is dropped with an
    error log (never silently)."""
    started = time.monotonic()
    pub = start_publisher(qname, 2.0)
    _, err = pub.communicate(timeout=30)
    assert pub.returncode == 0
    assert time.monotonic() - started >= 2.0, "exited without waiting for a subscriber"
    assert "no subscriber within" in err and "dropped" in err, err
