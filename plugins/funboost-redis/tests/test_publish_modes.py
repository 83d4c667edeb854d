"""publish_mode on a real Redis: pipelined pushes reach the server on flush(), close() and interpreter exit;
a server that refuses makes them fail loudly (logged, counted, raised on the next push / flush);
confirmed pushes from many threads (group commit) each land exactly once; the one-by-one fast path
(pre-encoded command on connections of our own) survives a server restart."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
import redis

from funboost import BoosterParams, boost
from funboost.publishing import PublishFailed
from funboost.testing import wait_until
from funboost_redis import RedisAckAbleBroker, RedisOptions


def _booster(url: str, queue: str, **params):
    @boost(BoosterParams(queue_name=queue, broker_kind="redis_ack_able", state_backend="memory",
                         log_to_console=False, broker_exclusive_config={"url": url, "retry_seconds": 0.2},
                         **params))
    def task(x: int) -> int:
        return x
    return task


def _ready(url: str, queue: str) -> int:
    b = RedisAckAbleBroker(queue, RedisOptions(url=url))
    try:
        return b.queue_size().ready
    finally:
        b.close()


def test_pipelined_push_returns_before_the_broker_has_it_and_flush_waits(redis_url, qname):
    f = _booster(redis_url, qname, publish_mode="pipelined", publish_window_ms=60_000)
    for i in range(300):
        f.push(i)
    assert f.publish_stats["pending"] == 300  # the window (60 s) holds them
    assert _ready(redis_url, qname) == 0
    f.flush()
    assert f.publish_stats == {"pushed": 300, "confirmed": 300, "failed": 0, "pending": 0}
    assert _ready(redis_url, qname) == 300
    f.push(300)
    f.close()  # flushes
    assert _ready(redis_url, qname) == 301
    f.clear()


def test_pipelined_window_bounds_time_and_count(redis_url, qname):
    f = _booster(redis_url, qname, publish_mode="pipelined", publish_window_ms=60_000, publish_window_max=50)
    for i in range(50):
        f.push(i)
    wait_until(lambda: _ready(redis_url, qname) == 50, 10, message="a full window sent without flush")
    g = _booster(redis_url, qname + "_t", publish_mode="pipelined", publish_window_ms=20)
    g.push(1)
    wait_until(lambda: _ready(redis_url, qname + "_t") == 1, 10, message="a partial window sent at its end")
    f.close()
    g.close()
    f.clear()
    g.clear()


def test_pipelined_messages_are_flushed_at_interpreter_exit(redis_url, qname):
    code = textwrap.dedent(f"""
        from funboost import BoosterParams, boost
        @boost(BoosterParams(queue_name={qname!r}, broker_kind="redis_ack_able", state_backend="memory",
                             log_to_console=False, publish_mode="pipelined", publish_window_ms=60000,
                             broker_exclusive_config={{"url": {redis_url!r}}}))
        def task(x):
            return x
        for i in range(200):
            task.push(i)
        print("pending", task.publish_stats["pending"], flush=True)
    """)  # exits normally without flush(): the exit handler sends the window
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "pending 200" in p.stdout
    assert _ready(redis_url, qname) == 200
    redis.Redis.from_url(redis_url).delete(f"funboost:{{{qname}}}:ready")


def test_pipelined_messages_are_flushed_on_sigterm(redis_url, qname):
    code = textwrap.dedent(f"""
        import time
        from funboost import BoosterParams, boost
        @boost(BoosterParams(queue_name={qname!r}, broker_kind="redis_ack_able", state_backend="memory",
                             log_to_console=False, publish_mode="pipelined", publish_window_ms=60000,
                             broker_exclusive_config={{"url": {redis_url!r}}}))
        def task(x):
            return x
        for i in range(100):
            task.push(i)
        print("pushed", task.publish_stats["pending"], flush=True)
        while True:
            time.sleep(1)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "pushed 100"
        assert _ready(redis_url, qname) == 0
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, p.stderr.read()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
    assert _ready(redis_url, qname) == 100
    redis.Redis.from_url(redis_url).delete(f"funboost:{{{qname}}}:ready")


def test_pipelined_failure_is_logged_counted_and_raised(private_redis, qname, caplog):
    url = private_redis.url
    f = _booster(url, qname, publish_mode="pipelined", publish_window_ms=10, publish_retry_times=1)
    f.push(0)
    f.flush()
    private_redis.kill()  # the server refuses connections from now on
    for i in range(1, 6):
        f.push(i)
    with pytest.raises(PublishFailed) as info:
        f.flush(timeout=30)
    assert info.value.count == 5 and len(info.value.task_ids) == 5
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert f.publish_stats["failed"] == 5 and f.publish_stats["confirmed"] == 1
    assert any("were not published" in r.getMessage() for r in caplog.records)
    f.push(6)
    wait_until(lambda: f.publish_stats["failed"] == 6, 30, message="the next failure counted")
    with pytest.raises(PublishFailed):  # not flushed: the next push raises it
        f.push(7)
    private_redis.start()  # same port and data directory: the server is back
    f.flush(timeout=30)
    assert _ready(url, qname) == 2  # message 0 and message 7
    f.close()


def test_confirmed_pushes_from_many_threads_each_land_once(redis_url, qname):
    f = _booster(redis_url, qname)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(250):
                f.push(t * 1000 + i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    r = redis.Redis.from_url(redis_url)
    bodies = r.lrange(f"funboost:{{{qname}}}:ready", 0, -1)
    xs = sorted(json.loads(b)["x"] for b in bodies)
    assert xs == sorted(t * 1000 + i for t in range(8) for i in range(250))
    f.clear()


def test_confirmed_push_fails_loudly_and_recovers_after_a_restart(private_redis, qname):
    url = private_redis.url
    f = _booster(url, qname)
    f.push(1)
    private_redis.kill()
    with pytest.raises(redis.ConnectionError):
        f.push(2)  # retry_seconds=0.2, then the error reaches the caller
    private_redis.start()
    f.push(3)  # the broken connection was dropped; a new one is made
    bodies = redis.Redis.from_url(url).lrange(f"funboost:{{{qname}}}:ready", 0, -1)
    assert sorted(json.loads(b)["x"] for b in bodies) == [1, 3]
    f.close()


def test_pipelined_mode_is_rejected_where_publish_is_not_batched():
    with pytest.raises(ValueError, match="pipelined"):
        BoosterParams(queue_name=f"q_{uuid.uuid4().hex[:6]}", broker_kind="redis_pubsub", publish_mode="pipelined")
