"""ApsJobAdder: push jobs on date / interval / cron triggers, memory and sqlite stores, the lock guard,
and a script whose main thread ends while jobs remain."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time

import pytest

from funboost import ApsJobAdder, BoosterParams, boost
from funboost.exceptions import PublishArgumentsError
from funboost.keepalive import THREADS_STOP_AT_SCRIPT_END
from funboost.state.base import get_state_backend
from funboost.testing import wait_until


def _booster(qname: str, calls: list):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", log_to_console=False))
    def f(x: int, y: int = 0) -> int:
        calls.append((x, y))
        return x + y
    return f


def _drain(f) -> list[dict]:
    import json
    out = []
    for d in f.broker.fetch(1000, 0.1):
        body = d.body if isinstance(d.body, dict) else json.loads(d.body)
        out.append(body)
    return out


def test_interval_job_pushes_messages_and_does_not_run_the_function(qname):
    calls: list = []
    f = _booster(qname, calls)
    adder = ApsJobAdder(f, job_store_kind="memory")
    try:
        start = dt.datetime.now() + dt.timedelta(seconds=0.3)
        adder.add_push_job(trigger="interval", seconds=0.5, args=(1,), kwargs={"y": 2}, id="every_half_second",
                           start_date=start, end_date=start + dt.timedelta(seconds=1.1))
        wait_until(lambda: f.get_message_count() == 3 and not adder.get_jobs(), 10,
                   message="three pushes then the job ends")
        bodies = _drain(f)
        assert [(b["x"], b["y"]) for b in bodies] == [(1, 2)] * 3
        assert calls == []  # the job pushes; only a consumer runs the function
    finally:
        adder.shutdown()


def test_date_job_fires_once(qname):
    f = _booster(qname, [])
    adder = ApsJobAdder(f)
    try:
        adder.add_push_job(trigger="date", run_date=dt.datetime.now() + dt.timedelta(seconds=0.3), args=(7,),
                           id="once")
        wait_until(lambda: f.get_message_count() == 1, 10, message="the date job")
        time.sleep(0.5)
        assert f.get_message_count() == 1 and adder.get_jobs() == []
    finally:
        adder.shutdown()


def test_cron_job_is_scheduled(qname):
    f = _booster(qname, [])
    adder = ApsJobAdder(f)
    try:
        job = adder.add_push_job(trigger="cron", second="*/2", args=(1,), id="cron2", replace_existing=True)
        assert job.next_run_time is not None and job.next_run_time.second % 2 == 0
        wait_until(lambda: f.get_message_count() >= 1, 10, message="a cron tick")
        adder.remove_job("cron2")
        assert adder.get_jobs() == []
    finally:
        adder.shutdown()


def test_arguments_checked_when_the_job_is_added(qname):
    f = _booster(qname, [])
    adder = ApsJobAdder(f, is_auto_start=False)
    with pytest.raises(PublishArgumentsError):
        adder.add_push_job(trigger="interval", seconds=5, kwargs={"nope": 1})
    with pytest.raises(PublishArgumentsError):
        adder.add_push_job(trigger="interval", seconds=5, args=(1, 2, 3))


def test_unknown_store_kind(qname):
    f = _booster(qname, [])
    with pytest.raises(ValueError, match="job_store_kind"):
        ApsJobAdder(f, job_store_kind="mongo")


def test_paused_adder_stores_jobs_without_firing(qname):
    f = _booster(qname, [])
    adder = ApsJobAdder(f, job_store_kind="sqlite", is_auto_paused=True)
    try:
        adder.add_push_job(trigger="interval", seconds=0.2, args=(1,), id="paused_job", replace_existing=True)
        time.sleep(0.8)
        assert f.get_message_count() == 0
        assert [j.id for j in adder.get_jobs()] == ["paused_job"]
        adder.resume()
        wait_until(lambda: f.get_message_count() >= 1, 10, message="firing after resume")
    finally:
        adder.remove_all_jobs()
        adder.shutdown()


def test_shared_store_lock_held_elsewhere_blocks_firing(qname):
    """While another scheduler holds the store's lock this one does not fire; it fires once it is free."""
    f = _booster(qname, [])
    sb = get_state_backend("sqlite")
    lock_name = f"aps:sqlite:{qname}:process"
    assert sb.acquire_lock(lock_name, "another-scheduler", 30)
    adder = ApsJobAdder(f, job_store_kind="sqlite")
    try:
        adder.add_push_job(trigger="date", run_date=dt.datetime.now() + dt.timedelta(seconds=0.2), args=(1,),
                           id="guarded", replace_existing=True)
        time.sleep(1.0)
        assert f.get_message_count() == 0
        sb.release_lock(lock_name, "another-scheduler")
        wait_until(lambda: f.get_message_count() == 1, 10, message="firing after the lock is released")
    finally:
        adder.shutdown()


def test_claimed_run_time_is_not_fired_again(qname):
    """A (job, run time) claimed by another scheduler is skipped here."""
    f = _booster(qname, [])
    run_at = dt.datetime.now().astimezone().replace(microsecond=0) + dt.timedelta(seconds=1)
    sb = get_state_backend("sqlite")
    key = f"aps:sqlite:{qname}:run:claimed:{int(round(run_at.timestamp() * 1000))}"
    assert sb.acquire_lock(key, "another-scheduler", 60)
    adder = ApsJobAdder(f, job_store_kind="sqlite")
    try:
        adder.add_push_job(trigger="date", run_date=run_at, args=(1,), id="claimed", replace_existing=True)
        wait_until(lambda: adder.get_jobs() == [], 10, message="the date job to be processed")
        time.sleep(0.3)
        assert f.get_message_count() == 0
    finally:
        adder.shutdown()


@pytest.mark.skipif(THREADS_STOP_AT_SCRIPT_END, reason="CPython 3.12.0-3.12.2 start no thread after the main "
                    "script ends (gh-113964, fixed in 3.12.3)")
def test_script_whose_main_thread_ends_keeps_firing(tmp_path):
    """No "cannot schedule new futures after shutdown": the jobs left fire, then the process exits."""
    script = tmp_path / "sched.py"
    script.write_text(textwrap.dedent("""
        import atexit, datetime, time
        from funboost import boost, BoosterParams, ApsJobAdder

        @boost(BoosterParams(queue_name="main_ends", broker_kind="memory", log_to_console=False))
        def f(x):
            return x

        start = datetime.datetime.now() + datetime.timedelta(seconds=0.5)
        ApsJobAdder(f).add_push_job(trigger="interval", seconds=0.5, args=(5,), start_date=start,
                                    end_date=start + datetime.timedelta(seconds=1.2))
        atexit.register(lambda: print("pushed", f.get_message_count()))
    """))
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_NO_KEEPALIVE"}
    env["FUNBOOST_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "cannot schedule new futures" not in out.stderr
    assert out.stdout.strip().splitlines()[-1] == "pushed 3", (out.stdout, out.stderr)


def test_a_job_removed_during_a_pass_does_not_stop_the_scheduler(qname):
    """APScheduler removes a finished date job at the end of its pass; when the job already left the store
    (removed by the user or another process sharing it) that raises JobLookupError in the scheduler's
    thread. The scheduler must go on firing the other jobs."""
    from apscheduler.jobstores.base import JobLookupError

    f = _booster(qname, [])
    adder = ApsJobAdder(f, job_store_kind="memory")
    sched = adder.aps_obj
    real_remove = sched.remove_job
    raced: list = []

    def remove_job_that_lost_the_race(job_id, jobstore=None):
        if job_id == "first" and not raced:
            raced.append(job_id)
            real_remove(job_id, jobstore)  # someone else removed it first
            raise JobLookupError(job_id)
        return real_remove(job_id, jobstore)

    sched.remove_job = remove_job_that_lost_the_race
    try:
        now = dt.datetime.now()
        adder.add_push_job(trigger="date", run_date=now + dt.timedelta(seconds=0.2), args=(1,), id="first")
        adder.add_push_job(trigger="date", run_date=now + dt.timedelta(seconds=1.0), args=(2,), id="second")
        wait_until(lambda: f.get_message_count() == 2, 10, message="the second job fired after the race")
        assert raced == ["first"]
        assert sorted(b["x"] for b in _drain(f)) == [1, 2]
    finally:
        adder.shutdown()
