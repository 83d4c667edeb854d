"""Distributed rate control: two consumer processes share one qps budget through heartbeats in the
(sqlite) state backend."""
import os
import subprocess
import sys
import textwrap
import time
import uuid

from funboost.testing import wait_until

WORKER = textwrap.dedent("""
    import os, sys, time
    from funboost import boost, BoosterParams
    queue, out = sys.argv[1], sys.argv[2]

    @boost(BoosterParams(queue_name=queue, broker_kind="SQLITE_QUEUE", qps=10, state_backend="sqlite",
                         is_using_distributed_frequency_control=True, log_to_console=False))
    def tick(i):
        with open(out, "a") as f:
            f.write(f"{time.time()} {os.getpid()}\\n")

    if __name__ == "__main__":
        tick.consume()
        while True:
            time.sleep(1)
""")


def test_two_processes_share_the_qps(tmp_path):
    queue = f"dqps_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "starts.txt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "FUNBOOST_HEARTBEAT_INTERVAL": "0.5", "FUNBOOST_NO_KEEPALIVE": "1"}
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind="SQLITE_QUEUE", log_to_console=False))
    def tick(i):
        pass

    tick.push_many(range(400))
    procs = [subprocess.Popen([sys.executable, str(script), queue, str(out)], env=env) for _ in range(2)]
    try:
        wait_until(lambda: out.exists() and len({l.split()[1] for l in out.read_text().splitlines()}) == 2, 30,
                   message="both processes running tasks")
        time.sleep(3)  # let both see two live consumers, then measure a window of several seconds
        t0 = time.time()
        wait_until(lambda: time.time() - t0 >= 6, 10)
        starts = [float(l.split()[0]) for l in out.read_text().splitlines()]
        window = [t for t in starts if t0 <= t < t0 + 6]
        rate = len(window) / 6
        assert 8 <= rate <= 12, rate  # 10/s in total, not 10/s per process
    finally:
        for p in procs:
            p.kill()
        tick.clear()
