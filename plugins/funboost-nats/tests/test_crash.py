"""Crash safety of NATS_JETSTREAM through the engine: SIGKILL of one of two consumer processes
mid-run, and a nats-server killed and restarted mid-run (a private instance, never the shared one).
Each run of the task appends its number to a file of the test's own, so runs are counted outside NATS."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from funboost import BoosterParams, boost
from funboost.testing import wait_until
from funboost_nats import JetStreamOptions, NatsJetStreamBroker

CONCURRENCY = 16
CONSUMER = textwrap.dedent("""
    import os, sys, time
    from funboost import boost, BoosterParams
    queue, url, out, ack_wait = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    @boost(BoosterParams(queue_name=queue, broker_kind="NATS_JETSTREAM",
                         broker_exclusive_config={"url": url, "ack_wait": ack_wait},
                         concurrent_num=%d, state_backend="memory", log_to_console=False, max_retry_times=0))
    def task(i: int) -> None:
        time.sleep(0.05)
        os.write(fd, b"%%d\\n" %% i)

    task.consume()
    print("started", flush=True)
    while True:
        time.sleep(1)
""" % CONCURRENCY)


def start_consumer(queue: str, url: str, out: Path, ack_wait: float = 2.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CONSUMER, queue, url, str(out), str(ack_wait)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "started"
    return p


def runs(files: list[Path]) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for f in files:
        if f.exists():
            c.update(int(x) for x in f.read_text().split())
    return c


def publisher(queue: str, url: str):
    @boost(BoosterParams(queue_name=queue, broker_kind="NATS_JETSTREAM", broker_exclusive_config={"url": url},
                         state_backend="memory", log_to_console=False))
    def task(i: int) -> None:  # publisher side only
        pass
    return task


def test_sigkill_one_of_two_consumers_loses_nothing(nats_url, qname, tmp_path):
    n = 1000
    pub = publisher(qname, nats_url)
    pub.push_many(range(n))
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    procs = [start_consumer(qname, nats_url, f) for f in files]
    try:
        wait_until(lambda: len(runs(files)) >= 150, 60, message="150 done")
        victim = procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        killed_at = len(runs(files))
        wait_until(lambda: len(runs(files)) == n, 120, interval=0.1, message=f"all {n} done")
        counts = runs(files)
        assert set(counts) == set(range(n))
        dups = [i for i, c in counts.items() if c > 1]
        # only what the victim held (fetched, running, or run and not yet acked) may run twice
        assert len(dups) <= 4 * CONCURRENCY, f"{len(dups)} ran twice"
        print(f"\nkilled after {killed_at} done; {len(dups)} ran twice")
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        b = NatsJetStreamBroker(qname, JetStreamOptions(url=nats_url))
        b.delete_stream()
        b.close()


def test_server_restart_mid_run_publishers_and_consumers_resume(private_nats, qname, tmp_path):
    n, m = 1500, 300
    pub = publisher(qname, private_nats.url)
    pub.push_many(range(n))
    out = tmp_path / "runs.txt"
    p = start_consumer(qname, private_nats.url, out)
    try:
        wait_until(lambda: len(runs([out])) >= 300, 60, message="300 done")
        private_nats.kill()
        time.sleep(1.0)  # an outage, not a blip
        private_nats.start()
        restarted = time.monotonic()
        at_restart = len(runs([out]))
        wait_until(lambda: len(runs([out])) > at_restart, 30, interval=0.02, message="consuming after restart")
        consumer_resumed = time.monotonic() - restarted
        t0 = time.monotonic()
        pub.push_many(range(n, n + m))  # the publisher's connection comes back by itself
        publisher_resumed = time.monotonic() - t0
        wait_until(lambda: len(runs([out])) == n + m, 120, interval=0.1, message=f"all {n + m} done")
        assert set(runs([out])) == set(range(n + m))
        print(f"\nconsumer resumed {consumer_resumed:.2f}s after the restart; publishing {m} took "
              f"{publisher_resumed:.2f}s")
    finally:
        p.kill()
        p.wait(10)
