"""Broker restart mid-run (issue 19, item 2), on the test's own server (never the shared one): a redis-server
with AOF and ``appendfsync always``, a second RabbitMQ node, a second Kafka-wire test broker, each on free
loopback ports (funboost.testing.servers).

A consumer process runs the queue; the test publishes the first half, SIGKILLs the server once the consumer
is under way, keeps publishing one task at a time through the outage from a thread (each publish either
returns, possibly after the plugin's retries, or raises), restarts the server on the same port and data
directory, then publishes the rest. Every task whose publish returned must run (at-least-once kinds lose
nothing the server acknowledged); every failed publish must have raised an exception that names the
problem. The figures: how long after the restart the consumer ran its next task and a publish returned.

Kafka: the test broker keeps its log in memory (the only storage its build has), so a restart empties it;
only tasks published after the restart can be checked, and the test says so in its figures.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from funboost.testing import wait_until
from funboost.testing.workers import recording_publisher

from .brokers import private_server_options
from .report import record
from .sizes import SIZE

OUTAGE_SECONDS = 2.0  # how long the server stays down: an outage, not a blip

KINDS = ["redis_ack_able", "redis_stream", "redis_priority", "rabbitmq", "kafka"]


def options_for(kind: str, server: Any) -> dict[str, Any]:
    # a publish keeps retrying transient errors for 10 s (redis default 30 s): longer than the outage
    if kind.startswith("redis"):
        return private_server_options(kind, server, retry_seconds=10.0)
    if kind == "rabbitmq":
        return private_server_options(kind, server, publish_timeout=10.0, heartbeat=5)
    return private_server_options(kind, server)  # kafka: the plugin's default timings (see brokers.py)


class OutagePublisher(threading.Thread):
    """Publishes ``task(i)`` for i in ``ids``, one at a time, recording which returned and which raised."""

    def __init__(self, pub: Any, ids: range) -> None:
        super().__init__(daemon=True)
        self.pub, self.ids = pub, ids
        self.ok: list[int] = []
        self.failed: dict[int, str] = {}
        self.attempts = 0
        self.returned_at: list[float] = []  # monotonic time each successful publish returned

    def run(self) -> None:
        for i in self.ids:
            self.attempts += 1
            try:
                self.pub.push(i)
                self.ok.append(i)
                self.returned_at.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - recorded and checked by the test
                self.failed[i] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("kind", KINDS)
def test_broker_restart_mid_run(kind, qname, private_server, start_consumer):
    server = private_server(kind)
    n = SIZE.restart_tasks
    half, outage_n = n // 2, max(10, n // 20)
    consumer = None
    try:
        options = options_for(kind, server)
        consumer = start_consumer(kind, options, "consumer", task_seconds=0.01)
        pub = recording_publisher(kind, qname, options)
        pub.push_many(range(half))
        wait_until(lambda: consumer.done() >= max(5, half // 10), 120, 0.05, "the consumer under way")
        server.flush_metadata()  # the fault is a restart mid-run, not one in the moment a queue is created
        server.kill()
        killed_at = time.monotonic()
        before_kill = set(consumer.runs())
        during = OutagePublisher(pub, range(half, half + outage_n))
        during.start()
        time.sleep(OUTAGE_SECONDS)  # the fault itself: the server stays down this long
        server.start()
        restarted_at = time.monotonic()
        at_restart = consumer.done()
        if kind == "kafka":
            # The restarted broker is empty, so the consumer's next task is one published after the restart
            # (i >= half: the server was down from the kill to the restart, so every outage publish that returned
            # was stored by the restarted one). If no outage publish returned, the figure is taken after the rest.
            resumed = lambda: any(i >= half for i in consumer.runs())  # noqa: E731
            wait_until(lambda: resumed() or (not during.is_alive() and not during.ok), 60, 0.02,
                       "the consumer running a task published after the restart")
        else:
            resumed = lambda: consumer.done() > at_restart  # noqa: E731
            wait_until(resumed, 60, 0.02, "the consumer running tasks again after the restart")
        consumer_resumed = time.monotonic() - restarted_at if resumed() else None
        during.join(120)
        assert not during.is_alive(), "a publish during the outage hangs"
        pub.push(half + outage_n)
        # the first publish that returned after the restart (the outage thread's, or this one)
        first_ok = min([t for t in during.returned_at if t >= restarted_at] + [time.monotonic()])
        publish_after_restart = first_ok - restarted_at
        pub.push_many(range(half + outage_n + 1, n))
        if kind == "kafka":
            # the restarted broker is empty: what was published before the kill is gone with it
            expected = set(range(half + outage_n, n)) | set(during.ok)
        else:
            expected = set(range(half)) | set(during.ok) | set(range(half + outage_n, n))
        try:
            wait_until(lambda: set(consumer.runs()) >= expected, 180, 0.1,
                       f"every acknowledged publish ran ({len(expected)})")
        except AssertionError as exc:  # say which never ran, and what the consumer's process printed
            missing = sorted(expected - set(consumer.runs()))
            consumer.dump_threads()
            raise AssertionError(f"{exc}: {len(missing)} never ran ({missing[:20]}); queue size "
                                 f"{pub.get_message_count()} (the consumer's threads are in the captured "
                                 f"stderr)") from None
        if consumer_resumed is None:
            consumer_resumed = time.monotonic() - restarted_at
        runs = consumer.runs()
    finally:
        if consumer is not None:
            consumer.stop()
    lost = expected - set(runs)
    twice = sorted(i for i, c in runs.items() if c > 1)
    duplicates = len(twice)
    unclear = {i: e for i, e in during.failed.items() if len(e.split(": ", 1)[-1]) < 10}
    print(f"\n{kind}: N={n}, {len(before_kill)} done before the kill, outage publishes: {len(during.ok)} returned, "
          f"{len(during.failed)} raised, lost {len(lost)}, duplicates {duplicates}, consumer resumed "
          f"{consumer_resumed:.2f}s and a publish returned {publish_after_restart:.2f}s after the restart")
    for i, e in list(during.failed.items())[:3]:
        print(f"  publish of {i} during the outage raised {e}")
    assert not lost, f"lost {len(lost)} acknowledged tasks: {sorted(lost)[:20]}"
    if kind == "kafka":
        # Everything that ran before the kill is gone with the in-memory broker, so a duplicate here is a task
        # of the new log run twice: the consumer ran the recreated topic before it found out that the broker
        # had forgotten its group, then again after joining it anew (up to 250 of 250 in full-size runs)
        assert not twice, f"{len(twice)} tasks published after the restart ran twice: {twice[:20]}"
    assert not unclear, f"publishes failed without a clear error: {unclear}"
    record("broker_restart", kind=kind, n=n, outage_seconds=OUTAGE_SECONDS, lost=len(lost), duplicates=duplicates,
           outage_publishes_ok=len(during.ok), outage_publishes_raised=len(during.failed),
           consumer_resumed_seconds=round(consumer_resumed, 2),
           publish_resumed_seconds=round(publish_after_restart, 2),
           lost_with_server_memory=(len(set(range(half)) - before_kill) if kind == "kafka" else 0))
