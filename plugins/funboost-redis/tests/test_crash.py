"""Crash safety through the engine: SIGKILL of one of two consumer processes, and a redis-server killed
and restarted mid-run (on a private instance, never the shared one)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from funboost.testing import wait_until

CONSUMER = textwrap.dedent("""
    import sys, time, redis
    from funboost import boost, BoosterParams
    queue, broker_url, done_url, kind = sys.argv[1:5]
    r = redis.Redis.from_url(done_url)

    @boost(BoosterParams(queue_name=queue, broker_kind=kind,
                         broker_exclusive_config={"url": broker_url, "heartbeat_interval": 0.3,
                                                  "heartbeat_timeout": 1.5, "reclaim_interval": 0.3},
                         concurrent_num=16, state_backend="memory", log_to_console=False, max_retry_times=0))
    def task(i: int) -> None:
        time.sleep(0.002)
        p = r.pipeline(transaction=False)
        p.sadd(queue + ":done", i)
        p.hincrby(queue + ":runs", i, 1)
        p.execute()

    task.consume()
    print("started", flush=True)
    while True:
        time.sleep(1)
""")


def start_consumer(queue: str, broker_url: str, done_url: str, kind: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CONSUMER, queue, broker_url, done_url, kind],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    return p


def publish_all(queue: str, url: str, kind: str, n: int) -> None:
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config={"url": url},
                         state_backend="memory", log_to_console=False))
    def task(i: int) -> None:  # publisher side only
        pass

    task.push_many(range(n))


@pytest.mark.parametrize("kind", ["redis_ack_able", "redis_stream"])
def test_sigkill_one_of_two_consumers_loses_nothing(redis_url, qname, kind):
    n = 5000
    r = redis.Redis.from_url(redis_url)
    publish_all(qname, redis_url, kind, n)
    procs = [start_consumer(qname, redis_url, redis_url, kind) for _ in range(2)]
    try:
        wait_until(lambda: r.scard(qname + ":done") >= 1000, 60, message="1000 done")
        victim = procs[0]
        # frozen first, so that what it holds can be read before it dies: once it is dead the survivor
        # reclaims its in-flight at its next pass, and a test process slower than that read too late
        os.kill(victim.pid, signal.SIGSTOP)
        base = f"funboost:{{{qname}}}:"
        held: set[int] = set()
        for cid in r.smembers(base + "consumers"):
            if cid.decode().split(":")[1] == str(victim.pid):
                if kind == "redis_ack_able":
                    bodies = r.hvals(base + "inflight:" + cid.decode())
                    bodies += r.lrange(base + "landing:" + cid.decode(), 0, -1)
                else:
                    pend = r.xpending_range(base + "stream", "funboost", "-", "+", 100000, cid)
                    # an ack the victim sent just before SIGSTOP may land between the two reads (CI): that entry
                    # is done and gone from the stream, so it is not held
                    entries = (r.xrange(base + "stream", e["message_id"], e["message_id"]) for e in pend)
                    bodies = [found[0][1][b"b"] for found in entries if found]
                held |= {json.loads(b)["i"] for b in bodies}
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        wait_until(lambda: r.scard(qname + ":done") == n, 90, interval=0.1, message=f"all {n} done")
        runs = {int(k): int(v) for k, v in r.hgetall(qname + ":runs").items()}
        dups = {i for i, c in runs.items() if c > 1}
        assert set(runs) == set(range(n))
        assert dups <= held, f"duplicates outside the victim's in-flight: {sorted(dups - held)[:20]}"
        print(f"\n{kind}: victim held {len(held)} in flight, {len(dups)} ran twice")
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        r.delete(qname + ":done", qname + ":runs")
        for k in r.scan_iter(f"funboost:{{{qname}}}:*"):
            r.delete(k)


@pytest.mark.parametrize("kind", ["redis_ack_able", "redis_priority", "redis_stream"])
def test_redis_restart_mid_run_loses_nothing(redis_url, private_redis, qname, kind):
    n = 2000
    done = redis.Redis.from_url(redis_url)  # progress is recorded on the shared server, which stays up
    publish_all(qname, private_redis.url, kind, n)
    p = start_consumer(qname, private_redis.url, redis_url, kind)
    try:
        wait_until(lambda: done.scard(qname + ":done") >= 300, 60, message="300 done")
        private_redis.kill()
        time.sleep(1.0)  # an outage, not a blip
        private_redis.start()
        restarted = time.monotonic()
        at_restart = done.scard(qname + ":done")
        wait_until(lambda: done.scard(qname + ":done") > at_restart, 30, message="progress after restart")
        resumed_after = time.monotonic() - restarted
        wait_until(lambda: done.scard(qname + ":done") == n, 90, interval=0.1, message=f"all {n} done")
        print(f"\n{kind}: resumed {resumed_after:.2f}s after the restart")
    finally:
        p.kill()
        p.wait(10)
        done.delete(qname + ":done", qname + ":runs")


@pytest.mark.parametrize("kind", ["redis_ack_able", "redis_priority", "redis_stream"])
def test_clear_drops_what_a_dead_consumer_held(redis_url, qname, kind):
    """clear() after a consumer died kept what it held: it came back at the next reclaim pass and ran after
    the clear. Now what a consumer whose heartbeat expired held goes with the rest."""
    from funboost import BoosterParams, boost

    r = redis.Redis.from_url(redis_url)
    base = f"funboost:{{{qname}}}:"

    @boost(BoosterParams(queue_name=qname, broker_kind=kind, broker_exclusive_config={"url": redis_url},
                         state_backend="memory", log_to_console=False))
    def task(i: int) -> None:  # publisher / admin side only
        pass

    task.push_many(range(3000))
    victim = start_consumer(qname, redis_url, redis_url, kind)
    try:
        wait_until(lambda: r.scard(qname + ":done") >= 200, 60, message="200 done")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        size = task.queue_size()
        assert size.in_flight and size.in_flight > 0, f"the victim died holding nothing: {size}"
        cids = [c.decode() for c in r.smembers(base + "consumers")]
        wait_until(lambda: not any(r.exists(base + "hb:" + c) for c in cids), 10,
                   message="the victim's heartbeat expired")
        task.clear()
        size = task.queue_size()
        assert (size.ready, size.in_flight, size.delayed) == (0, 0, 0), \
            f"after clear: {size} (the dead consumer's in-flight messages survived)"
    finally:
        victim.kill()
        victim.wait(10)
        r.delete(qname + ":done", qname + ":runs")
        for k in r.scan_iter(f"funboost:{{{qname}}}:*"):
            r.delete(k)
