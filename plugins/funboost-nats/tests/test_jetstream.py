"""NATS_JETSTREAM beyond the contract: in-progress signals keep a long task from being redelivered,
a consumer that stops signalling loses its messages to another after ack_wait, native delay through
the engine, fork safety, and the stream layout."""
from __future__ import annotations

import json
import multiprocessing
import threading
import time

import pytest

from funboost import BoosterParams, TaskOptions, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until, wait_until
from funboost_nats import JetStreamOptions, NatsJetStreamBroker

SHORT = {"ack_wait": 1.0, "in_progress_interval": 0.25}


def env(i: int) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")


@pytest.fixture
def make(nats_url, qname):
    made: list[NatsJetStreamBroker] = []

    def make_broker(**opts) -> NatsJetStreamBroker:
        b = NatsJetStreamBroker(qname, JetStreamOptions(url=nats_url, **opts))
        made.append(b)
        return b
    yield make_broker
    for b in made:
        b.close()
    if made:
        made[0].delete_stream()  # opens it again for this
        made[0].close()


def test_held_message_is_not_redelivered_while_in_progress(make):
    holder, other = make(**SHORT), make(**SHORT)
    holder.publish([env(1)])
    [d] = fetch_until(holder, 1)
    # three ack_waits pass while the holder keeps the message: the ticker keeps it ours
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end:
        assert other.fetch(1, 0.5) == []
    assert holder.queue_size().in_flight == 1
    holder.ack([d])
    wait_until(lambda: holder.queue_size().in_flight == 0, 10, message="acked")
    assert other.fetch(1, 0.5) == []


def test_a_silent_holder_loses_the_message_after_ack_wait(make):
    holder, other = make(**SHORT), make(**SHORT)
    holder.publish([env(2)])
    [d] = fetch_until(holder, 1)
    holder.close()  # stops the ticker without acking, as a dead process would
    t0 = time.monotonic()
    [again] = fetch_until(other, 1, timeout=15)
    assert json.loads(again.body)["i"] == 2 and again.redelivered
    assert time.monotonic() - t0 < 10
    other.ack([again])


def test_long_task_runs_once_through_the_engine(nats_url, qname, make):
    make(**SHORT)  # owns the stream's deletion
    runs: list[int] = []

    @boost(BoosterParams(queue_name=qname, broker_kind="nats_jetstream",
                         broker_exclusive_config={"url": nats_url, **SHORT}, concurrent_num=2,
                         state_backend="memory", log_to_console=False))
    def slow(x: int) -> None:
        runs.append(x)
        time.sleep(3.5)  # 3.5 ack_waits

    try:
        slow.consume()
        slow.push(7)
        wait_until(lambda: slow.broker.queue_size().total == 0 and runs, 30, message="task finished and acked")
    finally:
        slow.stop_consume(10)
    assert runs == [7]


def test_native_delay_through_the_engine(nats_url, qname, make):
    make()
    ran_at: dict[int, float] = {}

    @boost(BoosterParams(queue_name=qname, broker_kind="nats_jetstream", broker_exclusive_config={"url": nats_url},
                         concurrent_num=4, state_backend="memory", log_to_console=False))
    def f(x: int) -> None:
        ran_at[x] = time.time()

    try:
        f.consume()
        t0 = time.time()
        f.publish({"x": 1}, task_options=TaskOptions(countdown=2.0))
        f.push(2)
        wait_until(lambda: len(ran_at) == 2, 30, message="both ran")
    finally:
        f.stop_consume(10)
    assert ran_at[2] < ran_at[1]
    assert ran_at[1] >= t0 + 2.0 - 0.05


def _child(q: NatsJetStreamBroker, out: "multiprocessing.Queue") -> None:
    q.publish([env(10)])
    got = fetch_until(q, 2, timeout=20)
    q.ack(got)
    out.put(sorted(json.loads(d.body)["i"] for d in got))


def test_broker_used_before_fork_works_in_the_child(make):
    b = make()
    b.publish([env(9)])
    assert b.queue_size().ready == 1  # the parent's loop thread and connection exist now
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(b, out))
    p.start()
    try:
        assert out.get(timeout=60) == [9, 10]
    finally:
        p.join(30)
    assert p.exitcode == 0
    assert b.queue_size().ready == 0  # the parent's connection still works


def test_stream_layout_and_names(make, qname):
    b = make()
    b.publish([env(1)])
    assert b.stream_name.endswith(qname) and b.subject.endswith("." + qname)
    odd = NatsJetStreamBroker("a.b c*", JetStreamOptions())
    assert all(ch not in odd.stream_name for ch in ". *>")
    assert odd.stream_name != NatsJetStreamBroker("a_b_c_", JetStreamOptions()).stream_name
    with pytest.raises(ValueError):
        JetStreamOptions(ack_wait=1.0, in_progress_interval=2.0)
    with pytest.raises(ValueError):
        JetStreamOptions(stream_prefix="a.b")


def test_concurrent_publishers_share_one_connection(make):
    b = make()
    errors: list[BaseException] = []

    def pub(k: int) -> None:
        try:
            b.publish([env(k * 100 + i) for i in range(50)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=pub, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    wait_until(lambda: b.queue_size().ready == 400, 10, message="400 stored")


def _publish_raw(url: str, subject: str, body: bytes, headers: dict) -> None:
    """Publish as another client would (not through funboost)."""
    import asyncio

    import nats

    async def pub() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, body, headers=headers)
        finally:
            await nc.close()
    asyncio.run(pub())


def test_a_bad_eta_header_goes_to_the_dead_letter_queue_and_the_pump_goes_on(make, nats_url, qname):
    """Audit: one message with ``Funboost-Eta: garbage`` (published by another client) ended the pump for
    good (a float() outside any try), silently: nothing more was fetched."""
    b = make()
    b.publish([env(0)])  # creates the stream
    first = fetch_until(b, 1)
    assert [json.loads(d.body)["i"] for d in first] == [0]
    b.ack(first)
    for bad in ("garbage", "inf"):  # "inf" parsed, then overflowed the nak delay
        _publish_raw(nats_url, b.subject, json.dumps({"x": bad}).encode(), {"Funboost-Eta": bad})
    b.publish([env(1)])
    [d] = fetch_until(b, 1, timeout=15)
    assert json.loads(d.body)["i"] == 1
    b.ack([d])
    dlx = NatsJetStreamBroker(qname + "_dlx", JetStreamOptions(url=nats_url))
    try:
        dead = fetch_until(dlx, 2, timeout=15)
        bodies = sorted((json.loads(x.body) for x in dead), key=lambda o: o["x"])
        assert [o["x"] for o in bodies] == ["garbage", "inf"]
        assert all("invalid Funboost-Eta header" in o["extra"]["dead_letter_reason"] for o in bodies)
        dlx.ack(dead)
    finally:
        dlx.delete_stream()
        dlx.close()
    wait_until(lambda: b.queue_size().total == 0, 10, message="the refused messages acked on the queue")
    assert b.pump_errors == 0


def test_an_unexpected_error_on_one_message_is_logged_counted_and_survived(make, monkeypatch, caplog):
    """Fault injection: whatever fails while the pump handles one message must not end the pump; the
    message is left to the server and comes back after ack_wait."""
    b = make(**SHORT)
    real = NatsJetStreamBroker._sort_out
    failed: list[int] = []

    async def flaky(self, st, msg, now, ready):
        if json.loads(msg.data)["i"] == 1 and not failed:
            failed.append(1)
            raise RuntimeError("injected")
        await real(self, st, msg, now, ready)
    monkeypatch.setattr(NatsJetStreamBroker, "_sort_out", flaky)
    b.publish([env(1)])
    b.fetch(1, 0.01)  # starts the pump
    wait_until(lambda: failed, 10, message="the injected failure")
    b.publish([env(2)])
    got = fetch_until(b, 2, timeout=15)  # 2 at once, 1 again after ack_wait (1 s)
    assert sorted(json.loads(d.body)["i"] for d in got) == [1, 2]
    b.ack(got)
    assert b.pump_errors == 1
    assert "injected" in caplog.text
