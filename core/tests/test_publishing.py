"""publish_mode: group commit (confirmed) and the pipelined publisher, on the in-process memory broker.

The sends below are the memory broker's real ``publish`` wrapped to observe what reached it (and, where a
test needs it, to block until a condition holds or to refuse a batch); the broker-backed behaviour over
the network (a server that refuses, interpreter exit) is tested in the redis plugin's tests."""
from __future__ import annotations

import threading
import time
import uuid
from typing import Sequence

import pytest

from funboost import BoosterParams, boost
from funboost.brokers.memory import MemoryBroker
from funboost.plugins.broker import OutgoingMessage
from funboost.exceptions import MessagesRefused
from funboost.publishing import GroupCommit, PipelinedPublisher, PublishFailed
from funboost.testing.contract.base import wait_until


def _msg(tag: str) -> OutgoingMessage:
    return OutgoingMessage(body='{"x": 1}', task_id=tag)


class Recorder:
    """The memory broker's publish, recording each batch and what is stored (task ids)."""

    def __init__(self) -> None:
        self.broker = MemoryBroker(f"pub_{uuid.uuid4().hex[:8]}")
        self.batches: list[list[str]] = []
        self.stored: set[str] = set()
        self.lock = threading.Lock()
        self.refuse: set[str] = set()  # a batch holding one of these raises before anything is stored
        self.too_large: set[str] = set()  # refused for what they are (MessagesRefused), nothing stored
        self.gate: threading.Event | None = None  # when set up: the first send waits for it

    def __call__(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            assert gate.wait(10), "test gate never opened"
        ids = [m.task_id for m in messages]
        if self.refuse.intersection(ids):
            raise ConnectionError("refused by the test")
        bad = [i for i, t in enumerate(ids) if t in self.too_large]
        if bad:
            raise MessagesRefused("too large for the test", bad)
        self.broker.publish(list(messages))
        with self.lock:
            self.batches.append(ids)
            self.stored.update(ids)


def test_group_commit_every_caller_returns_after_its_message_is_stored():
    rec = Recorder()
    gc = GroupCommit(rec)
    errors: list[str] = []

    def worker(t: int) -> None:
        for i in range(200):
            tid = f"{t}-{i}"
            gc.publish([_msg(tid)])
            with rec.lock:
                if tid not in rec.stored:
                    errors.append(tid)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, f"publish returned before the broker had {errors[:5]}"
    all_ids = [i for b in rec.batches for i in b]
    assert len(all_ids) == 1600 and len(set(all_ids)) == 1600  # each once
    assert rec.broker.queue_size().ready == 1600


def test_group_commit_sends_queued_callers_in_one_batch():
    rec = Recorder()
    gate = rec.gate = threading.Event()
    gc = GroupCommit(rec)
    first = threading.Thread(target=gc.publish, args=([_msg("first")],))
    first.start()
    wait_until(lambda: gc._busy, 5, message="the first publish in flight")
    others = [threading.Thread(target=gc.publish, args=([_msg(f"o{i}")],)) for i in range(7)]
    for th in others:
        th.start()
    wait_until(lambda: len(gc._queue) == 7, 5, message="seven callers queued behind it")
    gate.set()
    for th in [first, *others]:
        th.join(10)
    assert rec.batches[0] == ["first"]
    assert sorted(rec.batches[1]) == sorted(f"o{i}" for i in range(7)), rec.batches
    assert not gc._busy and not gc._queue


def _one_batch_behind_a_first_call(rec: Recorder, tags: Sequence[str]) -> tuple[GroupCommit, dict[str, str]]:
    """A group commit whose first call ("first") is held in flight while callers of ``tags`` queue behind
    it, so that they go as one batch: each caller's outcome, "ok" or the name of what it raised."""
    gate = rec.gate = threading.Event()
    gc = GroupCommit(rec)
    outcome: dict[str, str] = {}

    def call(tid: str) -> None:
        try:
            gc.publish([_msg(tid)])
            outcome[tid] = "ok"
        except Exception as exc:
            outcome[tid] = type(exc).__name__

    first = threading.Thread(target=call, args=("first",))
    first.start()
    wait_until(lambda: gc._busy, 5, message="the first publish in flight")
    queued = [threading.Thread(target=call, args=(t,)) for t in tags]
    for th in queued:
        th.start()
    wait_until(lambda: len(gc._queue) == len(tags), 5, message=f"{len(tags)} callers queued")
    gate.set()
    for th in [first, *queued]:
        th.join(10)
    return gc, outcome


def test_group_commit_reports_a_failed_batch_to_each_of_its_callers():
    rec = Recorder()
    rec.refuse = {"bad"}
    gc, outcome = _one_batch_behind_a_first_call(rec, ("a", "bad", "b"))
    assert outcome == {"first": "ok", "a": "ConnectionError", "bad": "ConnectionError", "b": "ConnectionError"}
    assert rec.stored == {"first"}
    gc.publish([_msg("after")])  # the group commit is usable again
    assert "after" in rec.stored


def test_pipelined_publisher_flush_and_stats():
    rec = Recorder()
    p = PipelinedPublisher(rec, "q", window=60.0, max_batch=100_000)  # only flush() sends
    for i in range(500):
        p.publish([_msg(str(i))])
    assert p.stats["pushed"] == 500
    p.flush()
    assert rec.stored == {str(i) for i in range(500)}
    assert p.stats == {"pushed": 500, "confirmed": 500, "failed": 0, "pending": 0}
    p.close()
    with pytest.raises(RuntimeError):
        p.publish([_msg("late")])


def test_pipelined_publisher_sends_by_count_and_by_window():
    rec = Recorder()
    p = PipelinedPublisher(rec, "q", window=60.0, max_batch=10)
    for i in range(10):
        p.publish([_msg(f"c{i}")])
    wait_until(lambda: len(rec.stored) == 10, 5, message="a full batch sent without flush")
    p.close()
    rec2 = Recorder()
    p2 = PipelinedPublisher(rec2, "q", window=0.05, max_batch=1000)
    p2.publish([_msg("w")])
    wait_until(lambda: rec2.stored == {"w"}, 5, message="the window's end sends a partial batch")
    p2.close()


def test_pipelined_publisher_retries_then_reports_once():
    rec = Recorder()
    rec.refuse = {"bad"}
    p = PipelinedPublisher(rec, "q", window=60.0, max_batch=2, retries=1)
    p.publish([_msg("ok1")])
    p.publish([_msg("ok2")])  # a full batch: sent
    p.publish([_msg("bad")])
    with pytest.raises(PublishFailed) as info:
        p.flush()
    assert info.value.task_ids == ["bad"] and info.value.count == 1
    assert isinstance(info.value.__cause__, ConnectionError)
    assert p.stats["failed"] == 1 and p.stats["confirmed"] == 2
    p.publish([_msg("ok3")])  # reported once: the next push does not raise it again
    p.flush()
    assert rec.stored == {"ok1", "ok2", "ok3"}
    p.close()
    rec.refuse = {"bad2"}
    p3 = PipelinedPublisher(rec, "q", window=0.01, retries=0)
    p3.publish([_msg("bad2")])
    wait_until(lambda: p3.stats["failed"] == 1, 10, message="the failure counted")
    with pytest.raises(PublishFailed):  # raised on the next push, which is taken all the same
        p3.publish([_msg("ok4")])
    p3.close()
    assert "ok4" in rec.stored and "bad2" not in rec.stored


def test_booster_pipelined_mode_needs_the_capability():
    with pytest.raises(ValueError, match="pipelined"):
        BoosterParams(queue_name="q_pipe_mem", broker_kind="MEMORY_QUEUE", publish_mode="pipelined")
    with pytest.raises(ValueError):
        BoosterParams(queue_name="q_pipe_mem", publish_mode="fast")


def test_booster_flush_and_close_are_noops_in_confirmed_mode():
    @boost(BoosterParams(queue_name=f"q_conf_{uuid.uuid4().hex[:6]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def f(x: int) -> int:
        return x

    f.push(1)
    f.flush()
    assert f.publish_stats["pushed"] == 0
    assert f.get_message_count() == 1
    f.close()
    f.push(2)  # a new publishing broker after close


def _in_flight_booster(fail_wait_of: int = -1):
    """A memory-broker booster whose ``publish_begin`` stores at once and logs when each batch's wait runs
    (the wait of batch ``fail_wait_of`` raises, as a refused confirmation would)."""
    @boost(BoosterParams(queue_name=f"q_many_{uuid.uuid4().hex[:6]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def f(x: int) -> int:
        return x

    broker, log, begun = f.broker, [], []

    def begin(messages: Sequence[OutgoingMessage]):
        k = len(begun)
        begun.append([m.task_id for m in messages])
        log.append(f"begin{k}")
        broker.publish(messages)

        def wait() -> None:
            log.append(f"wait{k}")
            if k == fail_wait_of:
                raise ConnectionError("confirmation refused by the test")
        return wait
    broker.publish_begin = begin  # this booster's broker instance only
    return f, log, begun


def test_push_many_keeps_a_few_batches_in_flight_and_returns_in_order():
    f, log, begun = _in_flight_booster()
    assert f.MANY_IN_FLIGHT == 4
    results = f.push_many(range(2500), batch_size=500)  # five batches
    assert log == ["begin0", "begin1", "begin2", "begin3", "wait0", "begin4", "wait1", "wait2", "wait3", "wait4"]
    assert [r.task_id for r in results] == [t for batch in begun for t in batch]
    assert f.get_message_count() == 2500


def test_push_many_waits_for_every_batch_begun_and_raises_the_first_error():
    f, log, _ = _in_flight_booster(fail_wait_of=1)
    with pytest.raises(ConnectionError, match="refused by the test"):
        f.push_many(range(2500), batch_size=500)
    # the batches begun after the failed one are still waited for: no confirmation is left behind
    assert log == ["begin0", "begin1", "begin2", "begin3", "wait0", "begin4", "wait1", "wait2", "wait3", "wait4"]


def test_pipelined_close_refuses_pushes_that_it_would_not_send():
    """A push that returns while close() flushes (a producer loop when SIGTERM drains the process from the
    watcher thread, which then ends it with os._exit) must be sent by that close(), or raise."""
    rec = Recorder()
    begun = threading.Event()

    def begin(messages):  # an asynchronous confirm, as RabbitMQ's and Kafka's publish_begin
        begun.set()
        t = threading.Thread(target=lambda: (time.sleep(0.3), rec(messages)))
        t.start()
        return t.join

    p = PipelinedPublisher(rec, "q", window=60.0, begin=begin)
    p.publish([_msg("a")])
    closer = threading.Thread(target=p.close)
    closer.start()
    assert begun.wait(5)  # close() is flushing "a"
    time.sleep(0.05)  # the sender now waits for the confirmation of "a"
    returned = []
    try:
        p.publish([_msg("b")])
        returned.append("b")
    except RuntimeError:
        pass
    closer.join(10)
    assert rec.stored >= {"a", *returned}, f"close() returned before pushes that returned were sent: {rec.stored}"


def test_pipelined_messages_of_a_forked_multiprocessing_child_are_flushed(tmp_path):
    """multiprocessing's fork children end with os._exit (no atexit): its finalizers flush the window.
    In a fresh interpreter: a fork of this test process, with the other tests' threads, could inherit a
    lock one of them held (the child hung once in the whole suite)."""
    import subprocess
    import sys
    import textwrap
    out = tmp_path / "sent.txt"
    script = textwrap.dedent(f"""
        import multiprocessing
        from funboost.plugins.broker import OutgoingMessage
        from funboost.publishing import PipelinedPublisher

        def send(messages):
            with open({str(out)!r}, "a") as fh:
                fh.write("".join(m.task_id + "\\n" for m in messages))

        def child():
            p = PipelinedPublisher(send, "q", window=60.0, max_batch=100_000)
            for i in range(100):
                p.publish([OutgoingMessage('{{}}', str(i))])

        if __name__ == "__main__":
            proc = multiprocessing.get_context("fork").Process(target=child)
            proc.start()
            proc.join(60)
            raise SystemExit(proc.exitcode if proc.exitcode is not None else 99)
    """)
    (tmp_path / "fork_child.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "fork_child.py")], timeout=120, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    sent = out.read_text().split() if out.exists() else []
    assert sorted(sent, key=int) == [str(i) for i in range(100)]


def test_a_push_during_the_exit_flush_never_returns_for_a_message_it_drops(tmp_path):
    """The SIGTERM drain flushes from the watcher thread, then ends the process with os._exit: a producer
    loop's push during that flush neither returns (its message would be lost) nor raises into the loop."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, threading, time
        from funboost.plugins.broker import OutgoingMessage
        from funboost.publishing import PipelinedPublisher, flush_all_at_exit
        sent, returned = open({str(tmp_path / 'sent')!r}, 'w'), open({str(tmp_path / 'returned')!r}, 'w')

        def send(messages):
            time.sleep(0.001)
            sent.write(''.join(m.task_id + '\\n' for m in messages)); sent.flush()

        p = PipelinedPublisher(send, 'q', window=0.002, max_batch=5000)

        def producer():
            i = 0
            while True:
                p.publish([OutgoingMessage('{{}}', str(i))])
                returned.write(str(i) + '\\n'); returned.flush()
                i += 1

        threading.Thread(target=producer, daemon=True).start()
        time.sleep(0.3)
        flush_all_at_exit()
        time.sleep(0.3)  # the producer is blocked in push now: nothing more may return
        os._exit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sent = set((tmp_path / "sent").read_text().split())
    returned = (tmp_path / "returned").read_text().split()
    assert len(returned) > 10
    assert set(returned) <= sent, f"{len(set(returned) - sent)} push(es) returned and were never sent"


def test_group_commit_a_refused_message_fails_only_its_caller():
    """One caller's message the broker refuses for what it is (kafka: above max_request_size) failed every
    caller of the batch with its error, though their messages were fine (issue 24 audit)."""
    rec = Recorder()
    rec.too_large = {"big"}
    _, outcome = _one_batch_behind_a_first_call(rec, ("a", "big", "b"))
    assert outcome == {"first": "ok", "a": "ok", "big": "MessagesRefused", "b": "ok"}
    assert rec.stored == {"first", "a", "b"}
    assert sum(len(b) for b in rec.batches) == 3  # each stored once


def test_pipelined_a_refused_message_fails_alone_and_the_rest_is_sent_once():
    rec = Recorder()
    rec.too_large = {"big"}
    p = PipelinedPublisher(rec, "q", window=60.0, max_batch=100_000)
    for i in range(50):
        p.publish([_msg(str(i))])
    p.publish([_msg("big")])
    for i in range(50, 100):
        p.publish([_msg(str(i))])
    with pytest.raises(PublishFailed) as info:
        p.flush()
    assert info.value.count == 1 and info.value.task_ids == ["big"], (info.value.count, info.value.task_ids)
    assert rec.stored == {str(i) for i in range(100)}
    assert sum(len(b) for b in rec.batches) == 100  # nothing sent twice
    assert p.stats["failed"] == 1 and p.stats["confirmed"] == 100, p.stats
