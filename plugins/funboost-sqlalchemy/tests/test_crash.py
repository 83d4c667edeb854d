"""SIGKILL of one of two consumer processes mid-run (N = 1,000) loses nothing, on each database."""
import collections
import json
import os
import signal
import subprocess

import pytest
from funboost import BoosterParams, boost

from conftest import options_for, script, wait_for

N = 1000
CONCURRENCY = 8


def read_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(x) for x in f.read().split() if x.isdigit()]


@pytest.mark.parametrize("verdict", [
    pytest.param({}, id="pid-gone"),  # same host: the dead pid is noticed at the next reclaim pass
    pytest.param({"check_pid": False, "heartbeat_interval": 0.3, "heartbeat_timeout": 1.5}, id="lease-expiry"),
])
def test_sigkill_one_of_two_consumers_loses_nothing(db, tmp_path, queue_name, verdict):
    options = options_for(db, **verdict)

    @boost(BoosterParams(queue_name=queue_name, broker_kind="SQLALCHEMY", state_backend="memory",
                         broker_exclusive_config=options, log_to_console=False))
    def work(i: int) -> None:  # same signature as in _boost_worker.py; only used to publish here
        pass

    work.push_many(range(N))
    outs = [str(tmp_path / f"w{k}.out") for k in range(2)]
    procs = [subprocess.Popen(script("_boost_worker.py") + [queue_name, o, "0.01", json.dumps(options)])
             for o in outs]
    try:
        wait_for(lambda: len(read_ids(outs[0])) >= 100, timeout=90, what="victim ran some tasks")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        wait_for(lambda: work.queue_size().total == 0, timeout=180, what="queue drained by the survivor")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        work.broker.close()
    runs = collections.Counter(read_ids(outs[0]) + read_ids(outs[1]))
    assert set(runs) == set(range(N)), f"lost: {sorted(set(range(N)) - set(runs))[:10]}"
    twice = [i for i, n in runs.items() if n > 1]
    assert len(twice) <= 4 * CONCURRENCY, f"{len(twice)} tasks ran twice"
    assert read_ids(outs[1]), "the survivor ran nothing"
