"""Across two processes: pause / resume (within 2 s, nothing lost), live qps, remote kill of queued
and running tasks. The consumer runs in a child process; this process controls it through the state
backend only."""
from __future__ import annotations

import time
import uuid

import pytest

import test_control_plane_worker as w

w.setup_env()

from funboost.testing import wait_until  # noqa: E402

PAUSE_DEADLINE = 2.0  # seconds: the documented bound for pause to take effect


def _cfg(stack: str, **kw):
    broker, state = w.require_stack(stack)
    return dict(queue=f"cp_{stack}_{uuid.uuid4().hex[:10]}", broker=broker, state=state, **kw)


@pytest.mark.parametrize("stack", ["sqlite", "redis"])
def test_pause_takes_effect_and_resume_loses_nothing(stack, tmp_path):
    cfg = _cfg(stack, concurrency=2)
    f = w.make_booster(cfg)
    n = 150
    f.publish_many({"x": i, "sleep": 0.05} for i in range(n))
    child = w.Child(tmp_path, mode="consume", **cfg)
    log = tmp_path / "task.log"
    try:
        wait_until(lambda: sum(1 for e in w.read_log(log) if e[0] == "start") >= 10, 30,
                   message="the child to start consuming")
        f.pause()
        paused_at = time.time()
        time.sleep(PAUSE_DEADLINE + 1.5)
        events = w.read_log(log)
        late = [e for e in events if e[0] == "start" and e[2] > paused_at + PAUSE_DEADLINE]
        assert late == [], f"{len(late)} tasks started more than {PAUSE_DEADLINE}s after pause()"
        started = {e[1] for e in events if e[0] == "start"}
        assert len(started) < n, "the whole queue ran before the pause: make the tasks longer"
        time.sleep(1.0)  # still paused: nothing new
        assert {e[1] for e in w.read_log(log) if e[0] == "start"} == started

        f.resume()
        wait_until(lambda: {e[1] for e in w.read_log(log) if e[0] == "end"} == set(range(n)), 60,
                   message="every task to finish after resume")
        ends = [e[1] for e in w.read_log(log) if e[0] == "end"]
        assert sorted(ends) == list(range(n)), "a task ran twice"
    finally:
        child.stop()
        f.clear()


def test_set_qps_at_run_time(tmp_path):
    cfg = _cfg("sqlite", concurrency=4)
    f = w.make_booster(cfg)
    f.set_qps(4)  # set before the consumer starts: it reads the flag on its first refresh
    f.publish_many({"x": i} for i in range(200))
    child = w.Child(tmp_path, mode="consume", **cfg)
    log = tmp_path / "task.log"
    try:
        wait_until(lambda: len([e for e in w.read_log(log) if e[0] == "start"]) >= 3, 30,
                   message="the child to start consuming")
        time.sleep(2.5)  # let the flag refresh and the rate settle
        a = len([e for e in w.read_log(log) if e[0] == "start"])
        time.sleep(3.0)
        rate = (len([e for e in w.read_log(log) if e[0] == "start"]) - a) / 3.0
        assert 2.0 <= rate <= 6.5, rate
        f.set_qps(40)
        time.sleep(2.5)
        b = len([e for e in w.read_log(log) if e[0] == "start"])
        time.sleep(2.0)
        rate2 = (len([e for e in w.read_log(log) if e[0] == "start"]) - b) / 2.0
        assert rate2 > 15, rate2
    finally:
        child.stop()
        f.clear()


@pytest.mark.parametrize("stack", ["sqlite", "redis"])
def test_remote_kill_of_running_and_queued_tasks(stack, tmp_path):
    cfg = _cfg(stack, concurrency=1, kill=True, rpc=True)
    f = w.make_booster(cfg)
    child = w.Child(tmp_path, mode="consume", **cfg)
    log = tmp_path / "task.log"
    try:
        running = f.push(1, sleep=60)
        wait_until(lambda: any(e[:2] == ("start", 1) for e in w.read_log(log)), 30, message="task 1 to start")
        queued = f.push(2)  # concurrency 1: waits in the queue behind task 1
        t0 = time.monotonic()
        f.kill_task(queued.task_id)
        f.kill_task(running.task_id)
        rec = running.wait(timeout=20)
        assert rec["run_status"] == "killed" and rec["exception_type"] == "TaskKilled"
        assert time.monotonic() - t0 < 10, "the running task was not stopped"
        rec2 = queued.wait(timeout=20)
        assert rec2["run_status"] == "killed"
        assert not any(e[1] == 2 for e in w.read_log(log)), "the killed queued task ran"
        assert not any(e[:2] == ("end", 1) for e in w.read_log(log))
        assert f.push(3).get(timeout=30) == 6  # the consumer keeps working
    finally:
        child.stop()
        f.clear()
