"""The key guarantee: a consumer process killed with SIGKILL mid-run loses nothing (two real consumer
processes through the engine, N = 1,000), and a frozen one (SIGSTOP) is reclaimed by heartbeat expiry."""
import collections
import os
import signal
import subprocess

import pytest
from funboost import BoosterParams, boost

from conftest import script, wait_for

N = 1000
CONCURRENCY = 8  # as in _boost_worker.py


def read_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(x) for x in f.read().split() if x.isdigit()]


def run_two_consumers_and_stop_one(tmp_path, queue_name, sig, options_json="{}"):
    @boost(BoosterParams(queue_name=queue_name, broker_kind="POSTGRES", state_backend="memory",
                         log_to_console=False))
    def work(i: int) -> None:  # same signature as in _boost_worker.py; only used to publish here
        pass

    work.push_many(range(N))
    assert work.queue_size().ready == N
    outs = [str(tmp_path / f"w{k}.out") for k in range(2)]
    procs = [subprocess.Popen(script("_boost_worker.py") + [queue_name, o, "0.01", options_json]) for o in outs]
    try:
        wait_for(lambda: len(read_ids(outs[0])) >= 100, timeout=60, what="victim ran some tasks")
        procs[0].send_signal(sig)
        wait_for(lambda: work.queue_size().total == 0, timeout=120, what="queue drained by the survivor")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        work.broker.close()
    runs = collections.Counter(read_ids(outs[0]) + read_ids(outs[1]))
    assert set(runs) == set(range(N)), f"lost: {sorted(set(range(N)) - set(runs))[:10]}"
    twice = [i for i, n in runs.items() if n > 1]
    # only what the victim held when it stopped can run twice: its running tasks (<= CONCURRENCY) and the
    # finished ones whose ack was still in the engine's ack batcher (a 10 ms linger)
    assert len(twice) <= 4 * CONCURRENCY, f"{len(twice)} tasks ran twice"
    survivor_ids = set(read_ids(outs[1]))
    assert survivor_ids, "the survivor ran nothing"
    return runs


def test_sigkill_one_of_two_consumers_loses_nothing(tmp_path, queue_name):
    # default liveness settings: the killed process's session disappears and its rows come back after
    # the grace (2 x heartbeat_interval), not after the heartbeat timeout
    run_two_consumers_and_stop_one(tmp_path, queue_name, signal.SIGKILL)


def test_frozen_consumer_is_reclaimed_by_heartbeat_expiry(tmp_path, queue_name):
    """SIGSTOP: the process and its database sessions still exist, so only heartbeat expiry frees its rows."""
    run_two_consumers_and_stop_one(tmp_path, queue_name, signal.SIGSTOP,
                                   '{"heartbeat_interval": 0.3, "heartbeat_timeout": 2.0}')
