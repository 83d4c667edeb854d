"""Smoke runs on Redis Cluster (scripts/redis_cluster.sh) and Sentinel (started here, on free loopback ports).
Skipped when those services are not running, unless FUNBOOST_REQUIRE_SERVICES=1."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from funboost.testing import fetch_until, require_service, wait_until
from funboost_redis import (RedisAckAbleBroker, RedisBroker, RedisOptions, RedisPriorityBroker, RedisPubSubBroker,
                            RedisStreamBroker)

from conftest import free_port
from test_brokers import msg, xs

CLUSTER_PORT = int(os.environ.get("FUNBOOST_REDIS_CLUSTER_PORT", "7101"))


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "redis_cluster.sh")


def _cluster_ok() -> bool:
    try:
        info = redis.Redis(port=CLUSTER_PORT, socket_connect_timeout=1).execute_command("CLUSTER", "INFO")
        return b"cluster_state:ok" in (info if isinstance(info, bytes) else str(info).encode())
    except Exception:
        return False


@pytest.fixture(scope="module")
def cluster_url():
    started = False
    script_said = ""
    if not _cluster_ok() and shutil.which("redis-server") and os.path.exists(SCRIPT):
        # the project's script starts a throw-away 3-master cluster on other loopback ports
        done = subprocess.run(["bash", SCRIPT], env=dict(os.environ, FUNBOOST_REDIS_CLUSTER_PORT=str(CLUSTER_PORT)),
                              capture_output=True, text=True, timeout=150)
        script_said = f"; the script exited {done.returncode}: {(done.stdout + done.stderr).strip()[-2000:]}"
        deadline = time.monotonic() + 10  # the nodes may still be agreeing when the script gives up
        while not _cluster_ok() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = _cluster_ok()
    if not _cluster_ok():
        require_service(f"no Redis Cluster on 127.0.0.1:{CLUSTER_PORT} (scripts/redis_cluster.sh){script_said}")
    yield f"redis://127.0.0.1:{CLUSTER_PORT}/0"
    if started:
        subprocess.run(["bash", SCRIPT, "stop"], env=dict(os.environ, FUNBOOST_REDIS_CLUSTER_PORT=str(CLUSTER_PORT)),
                       capture_output=True, timeout=60)


@pytest.mark.parametrize("cls", [RedisBroker, RedisAckAbleBroker, RedisPriorityBroker, RedisStreamBroker])
def test_cluster_smoke(cluster_url, qname, cls):
    opts = RedisOptions(url=cluster_url, cluster=True, heartbeat_interval=0.2, heartbeat_timeout=1.0,
                        reclaim_interval=0.2)
    b = cls(qname, opts)
    b.fetch(1, 0.01)
    b.publish([msg(i) for i in range(50)] + [msg(100, eta=time.time() + 0.3)])
    b.publish([msg(200)])
    got = fetch_until(b, 52, timeout=10)
    assert sorted(xs(got)) == list(range(50)) + [100, 200]
    b.requeue(got[:2])
    again = fetch_until(b, 2)
    b.ack(got[2:] + again)
    size = b.queue_size()
    assert size.ready == 0 and size.delayed == 0 and (size.in_flight in (0, None))
    b.close()


def test_cluster_pubsub(cluster_url, qname):
    opts = RedisOptions(url=cluster_url, cluster=True)
    a, p = RedisPubSubBroker(qname, opts), RedisPubSubBroker(qname, opts)
    a.fetch(1, 0.1)
    p.publish([msg(1)])
    assert xs(fetch_until(a, 1)) == [1]
    a.close(), p.close()


@pytest.fixture(scope="module")
def sentinel_setup():
    exe = shutil.which("redis-server")
    if not exe:
        require_service("redis-server binary not found")
    d = tempfile.mkdtemp(prefix="funboost-sentinel-")
    rport, sport = free_port(), free_port()
    master = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--dir", d],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(d, "sentinel.conf")
    with open(conf, "w") as fh:
        fh.write(f"port {sport}\nbind 127.0.0.1\ndir {d}\nsentinel monitor fbmaster 127.0.0.1 {rport} 1\n")
    sentinel = subprocess.Popen([exe, conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _ping(sport), 10, message="sentinel up")
        yield sport
    finally:
        for p in (sentinel, master):
            p.kill()
            p.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def _ping(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.ConnectionError:
        return False


def test_sentinel_smoke(sentinel_setup, qname):
    opts = RedisOptions(sentinels=[f"127.0.0.1:{sentinel_setup}"], sentinel_master="fbmaster",
                        url="redis://127.0.0.1/0")
    b = RedisAckAbleBroker(qname, opts)
    wait_until(lambda: RedisAckAbleBroker.check_available(opts) is None, 10, message="master known to sentinel")
    b.publish([msg(i) for i in range(10)])
    got = fetch_until(b, 10)
    b.ack(got)
    assert sorted(xs(got)) == list(range(10))
    b.close()
