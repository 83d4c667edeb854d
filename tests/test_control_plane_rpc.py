"""Across two processes: RPC round trip and error propagation, heartbeats, status records queried back.

The consumer runs in a child process (``test_control_plane_worker.py``); this process publishes, waits
for results and queries the state backend. Stacks: sqlite broker + sqlite state, redis broker + redis
state, and status records in PostgreSQL through the ``sqlalchemy`` state backend.
"""
from __future__ import annotations

import time
import uuid

import pytest

import test_control_plane_worker as w

w.setup_env()

from funboost import RemoteTaskError, RpcNotEnabled  # noqa: E402
from funboost.testing import wait_until  # noqa: E402


def _cfg(stack: str, **kw):
    broker, state = w.require_stack(stack)
    return dict(queue=f"cp_{stack}_{uuid.uuid4().hex[:10]}", broker=broker, state=state, **kw)


@pytest.mark.parametrize("stack", ["sqlite", "redis"])
def test_rpc_round_trip_and_errors(stack, tmp_path):
    cfg = _cfg(stack, rpc=True, concurrency=4)
    f = w.make_booster(cfg)
    child = w.Child(tmp_path, mode="consume", **cfg)
    try:
        ok = f.push(21)
        assert ok.get(timeout=30) == 42
        rec = ok.status_and_result
        assert rec["success"] is True and rec["pid"] == child.pid and rec["task_id"] == ok.task_id
        assert ok.is_success()

        bad = f.push(5, fail=True)
        with pytest.raises(RemoteTaskError) as ei:
            bad.get(timeout=30)
        assert ei.value.exception_type == "ValueError" and ei.value.exception_msg == "bad value 5"
        assert bad.is_success() is False and bad.result is None

        many = f.push_many([(i,) for i in range(20)])
        assert [r["result"] for r in type(ok).batch_wait(many, timeout=30)] == [i * 2 for i in range(20)]

        # the consumer registered itself with a heartbeat that names its process
        live = wait_until(lambda: [c for c in f.get_live_consumers() if c["pid"] == child.pid], 15,
                          message="the child's heartbeat")
        assert live[0]["queue"] == cfg["queue"] and live[0]["concurrent_num"] == 4
    finally:
        child.stop()
        f.clear()


def test_rpc_not_enabled_fails_at_once(tmp_path):
    cfg = _cfg("sqlite", rpc=False)
    f = w.make_booster(cfg)
    r = f.push(1)
    t0 = time.monotonic()
    with pytest.raises(RpcNotEnabled, match="is_using_rpc_mode"):
        r.get(timeout=60)
    assert time.monotonic() - t0 < 1
    f.clear()


@pytest.mark.parametrize("stack", ["sqlite", "redis", "postgres"])
def test_status_records_queried_back(stack, tmp_path):
    cfg = _cfg(stack, status=True, concurrency=4)
    f = w.make_booster(cfg)
    child = w.Child(tmp_path, mode="consume", **cfg)
    t0 = time.time()
    try:
        ids = [f.push(i, fail=i % 2 == 1).task_id for i in range(10)]
        recs = wait_until(lambda: (lambda r: r if len(r) == 10 else None)(f.query_statuses(limit=100)), 30,
                          message="10 status records")
    finally:
        child.stop()
        f.clear()
    assert {r["task_id"] for r in recs} == set(ids)
    assert [r["time_start"] for r in recs] == sorted((r["time_start"] for r in recs), reverse=True)
    failed = f.query_statuses(success=False)
    assert sorted(r["params"]["x"] for r in failed) == [1, 3, 5, 7, 9]
    assert all(r["exception_type"] == "ValueError" and r["run_status"] == "finish" for r in failed)
    good = f.query_statuses(success=True)
    assert sorted(r["result"] for r in good) == [0, 4, 8, 12, 16]
    one = f.query_statuses(task_id=ids[4])
    assert len(one) == 1 and one[0]["result"] == 8 and one[0]["pid"] == child.pid
    assert one[0]["host"] and one[0]["thread"] and one[0]["time_end"] >= one[0]["time_start"]
    assert len(f.query_statuses(since=t0 - 1, until=time.time() + 1)) == 10
    assert f.query_statuses(since=time.time() + 60) == []
    assert len(f.query_statuses(limit=3)) == 3
