"""RedisStateBackend against a real server, and RPC through the engine with state_backend='redis'."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from funboost.state.base import get_state_backend, resolve_state_backend_class
from funboost.testing import wait_until
from funboost_redis.state import RedisStateBackend


@pytest.fixture
def sb(redis_url) -> RedisStateBackend:
    return RedisStateBackend(redis_url)


def test_entry_point():
    assert resolve_state_backend_class("redis") is RedisStateBackend


def test_results(sb):
    tid = uuid.uuid4().hex
    assert sb.get_result(tid) is None
    threading.Timer(0.2, lambda: sb.set_result(tid, {"result": 3, "success": True}, 60)).start()
    t0 = time.monotonic()
    assert sb.wait_result(tid, 5) == {"result": 3, "success": True}
    assert time.monotonic() - t0 < 4
    assert sb.wait_result(uuid.uuid4().hex, 0.2) is None
    sb.set_result(tid + "x", {"r": 1}, 0.05)
    wait_until(lambda: sb.get_result(tid + "x") is None, 5, message="result expiry")


def test_filters_flags_kills(sb, qname):
    sb.filter_add(qname, "a", None)
    sb.filter_add(qname, "b", 0.1)
    assert sb.filter_contains(qname, "a") and sb.filter_contains(qname, "b")
    wait_until(lambda: not sb.filter_contains(qname, "b"), 5, message="filter ttl")
    sb.filter_clear(qname)
    assert not sb.filter_contains(qname, "a")
    sb.set_flag(qname, "pause", True)
    sb.set_flag(qname, "qps", 2.5)
    assert sb.get_flags(qname) == {"pause": True, "qps": 2.5}
    sb.request_kill(qname, "t1")
    sb.request_kill(qname, "t2", ttl=0.05)
    wait_until(lambda: sb.kill_requests(qname) == {"t1"}, 5, message="kill ttl")


def test_consumers(sb, qname):
    cid = uuid.uuid4().hex
    sb.heartbeat(cid, qname, {"host": "h"}, 10)
    sb.heartbeat(cid + "short", qname, {}, 0.05)
    live = wait_until(lambda: [c for c in sb.live_consumers(qname)] if len(sb.live_consumers(qname)) == 1 else None,
                      5, message="one live consumer")
    assert live[0]["consumer_id"] == cid and live[0]["host"] == "h"
    assert any(c["consumer_id"] == cid for c in sb.live_consumers())
    sb.remove_consumer(cid)
    assert sb.live_consumers(qname) == []


def test_statuses(sb, qname):
    now = time.time()
    recs = [{"task_id": f"t{i}", "success": i % 2 == 0, "time_start": now + i} for i in range(10)]
    sb.save_statuses(qname, recs, 60)
    assert [r["task_id"] for r in sb.query_statuses(qname, limit=3)] == ["t9", "t8", "t7"]
    assert {r["task_id"] for r in sb.query_statuses(qname, success=False)} == {f"t{i}" for i in range(1, 10, 2)}
    assert sb.query_statuses(qname, task_id="t4")[0]["success"] is True
    assert len(sb.query_statuses(qname, since=now + 5)) == 5


def test_rpc_through_engine(redis_url, qname, monkeypatch):
    monkeypatch.setenv("FUNBOOST_STATE_REDIS_URL", redis_url)
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=qname, broker_kind="redis_ack_able", state_backend="redis",
                         is_using_rpc_mode=True, log_to_console=False))
    def add(x: int, y: int) -> int:
        return x + y

    try:
        add.consume()
        assert add.push(2, 3).get(timeout=20) == 5
    finally:
        add.stop_consume(10)
        add.clear()
