"""The key guarantee: a consumer process killed with SIGKILL mid-run loses nothing (two real consumer
processes through the engine, N = 1,000), and a frozen one (SIGSTOP) is reclaimed by heartbeat expiry."""
import os
import signal

import pytest
from funboost.testing.workers import ConsumerProcess, assert_victim_lost_nothing, recording_publisher, stop_all

from conftest import wait_for

N = 1000
CONCURRENCY = 8


def run_two_consumers_and_stop_one(tmp_path, queue_name, sig, options=None):
    options = options or {}
    work = recording_publisher("POSTGRES", queue_name, {})
    work.push_many(range(N))
    assert work.queue_size().ready == N
    victim = survivor = None
    try:
        victim = ConsumerProcess("POSTGRES", queue_name, options, str(tmp_path / "w0.out"), concurrency=CONCURRENCY,
                                 task_seconds=0.01)
        survivor = ConsumerProcess("POSTGRES", queue_name, options, str(tmp_path / "w1.out"),
                                   concurrency=CONCURRENCY, task_seconds=0.01)
        wait_for(lambda: victim.done() >= 100, timeout=60, what="victim ran some tasks")
        os.kill(victim.pid, sig)
        wait_for(lambda: work.queue_size().total == 0, timeout=120, what="queue drained by the survivor")
    finally:
        stop_all([victim, survivor])
        work.broker.close()
    return assert_victim_lost_nothing(victim.runs(), survivor.runs(), N)


def test_sigkill_one_of_two_consumers_loses_nothing(tmp_path, queue_name):
    # default liveness settings: the killed process's session disappears and its rows come back after
    # the grace (2 x heartbeat_interval), not after the heartbeat timeout
    run_two_consumers_and_stop_one(tmp_path, queue_name, signal.SIGKILL)


def test_frozen_consumer_is_reclaimed_by_heartbeat_expiry(tmp_path, queue_name):
    """SIGSTOP: the process and its database sessions still exist, so only heartbeat expiry frees its rows."""
    run_two_consumers_and_stop_one(tmp_path, queue_name, signal.SIGSTOP,
                                   {"heartbeat_interval": 0.3, "heartbeat_timeout": 2.0})


def test_clear_drops_what_a_dead_consumer_held(tmp_path, queue_name):
    """clear() kept a SIGKILLed consumer's in-flight rows: they came back at the next reclaim pass and ran
    after the clear."""
    from funboost.testing.workers import assert_clear_drops_what_a_dead_consumer_held

    assert_clear_drops_what_a_dead_consumer_held("POSTGRES", queue_name, {"heartbeat_interval": 0.3},
                                                 str(tmp_path / "victim.out"))
