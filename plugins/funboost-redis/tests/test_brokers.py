"""Broker-level behaviour beyond the contract suite: blocking wake-up, liveness, lost replies, linger,
fork, options."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until, wait_until
from funboost_redis import (RedisAckAbleBroker, RedisBroker, RedisOptions, RedisPriorityBroker, RedisPubSubBroker,
                            RedisStreamBroker)
from funboost_redis.connection import conn_spec

FAST = dict(heartbeat_interval=0.2, heartbeat_timeout=1.0)


def msg(i: int, **kw) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": f"id{i}"}}), task_id=f"id{i}", **kw)


def xs(deliveries) -> list[int]:
    return [json.loads(d.body)["x"] for d in deliveries]


@pytest.fixture
def opts(redis_url):
    return RedisOptions(url=redis_url, **FAST)


@pytest.mark.parametrize("cls", [RedisBroker, RedisAckAbleBroker, RedisStreamBroker])
def test_blocking_fetch_wakes_up_on_publish(cls, opts, qname):
    b = cls(qname, opts)
    pub = cls(qname, opts)
    b.fetch(1, 0.01)  # join (stream group)
    t = threading.Timer(0.3, lambda: pub.publish([msg(1)]))
    t.start()
    t0 = time.monotonic()
    got = b.fetch(10, 5.0)
    assert xs(got) == [1]
    assert time.monotonic() - t0 < 4.0  # woke up on the message, not at the timeout
    b.ack(got)
    b.close(), pub.close()


def test_live_consumer_work_is_never_reclaimed_long_task(opts, qname, redis_url):
    """A task held in flight far longer than the heartbeat timeout by a live process is not redelivered."""
    pub = RedisAckAbleBroker(qname, opts)
    pub.publish([msg(1)])
    holder = textwrap.dedent(f"""
        import time, sys
        from funboost_redis import RedisAckAbleBroker, RedisOptions
        b = RedisAckAbleBroker({qname!r}, RedisOptions(url={redis_url!r}, heartbeat_interval=0.2, heartbeat_timeout=1.0))
        got = []
        while not got:
            got = b.fetch(1, 1.0)
        print("held", flush=True)
        time.sleep(5.0)   # five heartbeat timeouts
        b.ack(got)
        print("acked", flush=True)
        b.close()
    """)
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        other = RedisAckAbleBroker(qname, RedisOptions(url=redis_url, heartbeat_interval=0.2, heartbeat_timeout=1.0,
                                                       reclaim_interval=0.2))
        stolen = []
        while p.poll() is None:
            stolen += other.fetch(10, 0.3)
        assert stolen == []
        assert p.wait(10) == 0
        assert other.queue_size().in_flight == 0 and other.queue_size().ready == 0
        other.close()
    finally:
        p.kill()


def test_dead_consumer_work_comes_back_front_of_line(opts, qname):
    a = RedisAckAbleBroker(qname, opts)
    a.publish([msg(i) for i in range(5)])
    got = fetch_until(a, 2, max_batch=2)
    # simulate a SIGKILL: stop beating without releasing
    a._lease.stop()
    a._registered = True  # keep close() from releasing
    b = RedisAckAbleBroker(qname, RedisOptions(**{**opts.model_dump(), "reclaim_interval": 0.2}))
    # b first gets the 3 waiting ones, then the 2 reclaimed after a's heartbeat expires
    rest = fetch_until(b, 5, timeout=10)
    assert sorted(xs(rest)) == [0, 1, 2, 3, 4]
    b.ack(rest)
    a.ack(got)  # late ack of a consumer declared dead: harmless no-op
    assert b.queue_size().in_flight == 0
    b.close()


def test_lost_fetch_reply_is_recovered(opts, qname):
    """Messages moved into our in-flight hash by a fetch whose reply never arrived are given back."""
    b = RedisAckAbleBroker(qname, opts)
    b.publish([msg(i) for i in range(3)])
    b.fetch(0, 0.01)  # registers
    from funboost_redis import scripts
    # run the fetch script as a lost call would have: moved server-side, never seen by the broker
    h = b._h()
    h.script("fetch_reliable", scripts.FETCH_RELIABLE)(
        keys=[b.k_delayed, b.k_inflight, b.k_landing, b.k_hb, b.k_consumers],
        args=[b.base, 1, time.time(), 2, b._next_id, b.hb_ttl_ms, b.consumer_id])
    assert b.queue_size().in_flight == 2
    b._need_recover = True
    got = fetch_until(b, 3)
    assert sorted(xs(got)) == [0, 1, 2]
    b.ack(got)
    assert b.queue_size().as_dict() == {"ready": 0, "in_flight": 0, "delayed": 0}
    b.close()


def test_close_releases_in_flight(opts, qname):
    a = RedisAckAbleBroker(qname, opts)
    a.publish([msg(i) for i in range(4)])
    fetch_until(a, 4)
    a.close()
    b = RedisAckAbleBroker(qname, opts)
    got = fetch_until(b, 4, timeout=2)
    b.ack(got)
    b.close()


def test_priority_and_delay_together(opts, qname):
    b = RedisPriorityBroker(qname, opts)
    b.publish([msg(1, priority=1), msg(9, priority=9, eta=time.time() + 0.5), msg(5, priority=5),
               msg(99, priority=42)])  # out of range -> clamped to 9
    got = fetch_until(b, 3)
    assert xs(got) == [99, 5, 1]
    later = fetch_until(b, 1, timeout=5)
    assert xs(later) == [9]
    b.ack(got + later)
    b.close()


def test_linger_buffer_flushes_on_close_and_timer(redis_url, qname):
    b = RedisBroker(qname, RedisOptions(url=redis_url, linger_ms=50))
    for i in range(10):
        b.publish([msg(i)])
    wait_until(lambda: b.queue_size().ready == 10, 5, message="linger flush by timer")
    b.publish([msg(10)])
    b.close()
    c = RedisBroker(qname, RedisOptions(url=redis_url))
    assert c.queue_size().ready == 11
    c.purge()


def test_pubsub_requeue_is_local(opts, qname):
    a, pub = RedisPubSubBroker(qname, opts), RedisPubSubBroker(qname, opts)
    a.fetch(1, 0.1)
    pub.publish([msg(1), msg(2)])
    got = fetch_until(a, 2)
    a.requeue(got[:1])
    assert xs(a.fetch(5, 0.1)) == [1]
    assert a.queue_size().ready is None
    a.close(), pub.close()


def test_env_var_and_validation(monkeypatch):
    monkeypatch.setenv("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6399/3")
    assert conn_spec(RedisOptions()).url == "redis://127.0.0.1:6399/3"
    assert conn_spec(RedisOptions(url="unix:///tmp/r.sock")).url == "unix:///tmp/r.sock"
    monkeypatch.setenv("FUNBOOST_REDIS_SENTINELS", "127.0.0.1:26390,127.0.0.1:26391")
    assert conn_spec(RedisOptions()).sentinels == (("127.0.0.1", 26390), ("127.0.0.1", 26391))
    with pytest.raises(Exception):
        RedisOptions(heartbeat_interval=5, heartbeat_timeout=6)
    with pytest.raises(Exception):
        RedisOptions(nope=1)
    reason = RedisBroker.check_available(RedisOptions(url="redis://127.0.0.1:1/0"))
    assert reason and "not reachable" in reason


def test_keys_are_hash_tagged(opts, qname):
    from redis.cluster import key_slot
    b = RedisStreamBroker(qname, opts)
    keys = [b.k_stream, b.k_delayed, b.k_hb, b.k_consumers, b.k_lock, b.base + "inflight:x"]
    assert len({key_slot(k.encode()) for k in keys}) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_uses_its_own_connection_and_identity(opts, qname):
    b = RedisAckAbleBroker(qname, opts)
    b.publish([msg(i) for i in range(4)])
    parent_got = fetch_until(b, 2, max_batch=2)
    parent_cid = b.consumer_id
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                got += b.fetch(2, 0.5)
            b.ack(got)
            os.write(w, json.dumps([xs(got), b.consumer_id != parent_cid]).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child_xs, new_identity = json.loads(os.read(r, 1000))
    assert sorted(child_xs + xs(parent_got)) == [0, 1, 2, 3] and new_identity
    b.ack(parent_got)
    assert b.queue_size().in_flight == 0
    b.close()
