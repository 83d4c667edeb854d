"""Consumer SIGKILL (issue 19, item 1): two consumer processes share a queue, one is killed with SIGKILL
mid-run. No task may be lost. A task may run twice only if the victim ran it (it was in flight, run but
not yet acked, at the kill); the survivor never runs a task twice. Duplicates are counted and printed."""
from __future__ import annotations

import time

import pytest

from funboost.testing import wait_until
from funboost.testing.workers import ConsumerProcess, recording_publisher, stop_all

from .brokers import broker_options, delete_queue, require_broker
from .report import record
from .sizes import SIZE

AT_LEAST_ONCE_KINDS = ["sqlite", "redis_ack_able", "redis_stream", "redis_priority", "rabbitmq", "kafka", "celery",
                       "dramatiq", "huey", "rq", "postgres", "sqlalchemy", "nats_jetstream"]


@pytest.mark.parametrize("kind", AT_LEAST_ONCE_KINDS)
def test_sigkill_one_of_two_consumers_loses_nothing(kind, qname, sqlite_dir, tmp_path):
    n = SIZE.sigkill_tasks
    options = broker_options(kind, sqlite_dir)
    require_broker(kind, options)
    pub = recording_publisher(kind, qname, options)
    victim = survivor = None
    try:
        # the queue exists (and consumer groups are joined) before the first message: start the
        # consumers first, then publish while they run
        # tasks of 50 ms on 8 threads (at most 160 tasks/s per consumer) keep both consumers busy for a
        # while, so the kill lands mid-run whatever share of the queue each consumer's fetches took
        victim = ConsumerProcess(kind, qname, options, str(tmp_path / "victim.out"), concurrency=8,
                                 task_seconds=0.05)
        survivor = ConsumerProcess(kind, qname, options, str(tmp_path / "survivor.out"), concurrency=8,
                                   task_seconds=0.05)
        # a consumer may take long to start under load (a framework's worker): feed both in small chunks
        # until each has run a task, so that the other cannot drain the whole queue before it even starts
        published = 0
        deadline = time.monotonic() + 120
        while not (victim.done() and survivor.done()):
            if published < n // 2:
                pub.push_many(range(published, published + 10))
                published += 10
            assert time.monotonic() < deadline, "a consumer never ran a task within 120 s"
            time.sleep(0.05)
        pub.push_many(range(published, n))
        kill_after = max(5, n // 50)
        wait_until(lambda: victim.done() >= kill_after, 120, 0.05, f"the victim ran {kill_after} tasks")
        victim.sigkill()
        killed_at = time.monotonic()
        victim_runs = victim.runs()  # final: a dead process writes nothing more
        done_at_kill = len(set(victim_runs) | set(survivor.runs()))
        assert done_at_kill < n, "every task had run before the kill: the test proved nothing"

        def all_ran() -> bool:
            return set(victim_runs) | set(survivor.runs()) >= set(range(n))

        try:
            wait_until(all_ran, 180, 0.1, f"all {n} tasks ran after the kill")
        except AssertionError as exc:  # name what never ran: the next engineer's first question
            missing = sorted(set(range(n)) - set(victim_runs) - set(survivor.runs()))
            raise AssertionError(f"{exc}; {len(missing)} never ran: {missing[:50]} (victim ran "
                                 f"{sum(victim_runs.values())} before the kill)") from None
        drained_after = time.monotonic() - killed_at
    finally:
        stop_all([victim, survivor])
        pub.broker.close()
        delete_queue(kind, qname, options)
    survivor_runs = survivor.runs()
    lost = set(range(n)) - set(victim_runs) - set(survivor_runs)
    twice = {i for i in range(n) if victim_runs[i] + survivor_runs[i] > 1}
    print(f"\n{kind}: N={n}, {done_at_kill} done at the kill (victim {sum(victim_runs.values())}), lost {len(lost)}, "
          f"duplicates {len(twice)}, every task done {drained_after:.1f}s after the kill")
    assert not lost, f"lost {len(lost)} tasks: {sorted(lost)[:20]}"
    assert all(c == 1 for c in survivor_runs.values()), "the survivor ran a task twice"
    assert all(c == 1 for c in victim_runs.values()), "the victim ran a task twice before its death"
    assert all(victim_runs[i] for i in twice), "a duplicate the victim never ran"
    record("consumer_sigkill", kind=kind, n=n, lost=len(lost), duplicates=len(twice),
           drain_seconds=round(drained_after, 1))
