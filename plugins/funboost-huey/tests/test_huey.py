"""The HUEY kind end to end: the README example, plain huey callers, RPC, retries, filter, expiry,
countdown, pause, status records, ExceptionForRequeue, multi_process_consume, and huey consumers
SIGKILLed mid-run (Redis: nothing is lost)."""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import time

import pytest

from funboost import BoosterParams, TaskOptions, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import body_text, fetch_until, wait_until
from funboost.testing import frameworks as fw

from conftest import REDIS_URL
from funboost_huey import HueyBroker, HueyOptions, huey_instance, huey_task

HERE = os.path.dirname(os.path.abspath(__file__))


def make(queue: str, cfg: dict, **kw) -> BoosterParams:
    return fw.framework_params("HUEY", queue, cfg, **kw)


@pytest.fixture
def params(cfg, queue_name, cleanup) -> fw.ParamsFactory:
    """BoosterParams on the test's storage (Redis or SQLite); the test's queue is purged afterwards."""
    cleanup(queue_name, cfg)
    return lambda queue, **kw: make(queue, cfg, **kw)


# ---------------------------------------------------------------------------------------- examples
def test_readme_example(params, queue_name, consumers):
    fw.check_readme_example(params, queue_name, consumers)


def test_messages_are_huey_tasks_with_funboost_ids(cfg, queue_name, cleanup):
    """What huey's own tools see: a task named after the queue, huey's id = funboost's task id, retries 0,
    the countdown as huey's eta."""
    cleanup(queue_name, cfg)

    @boost(make(queue_name, cfg))
    def f(x):
        return x

    h = huey_instance(f)
    assert h.name == queue_name
    r = f.push(1)
    later = f.publish({"x": 2}, task_options=TaskOptions(countdown=60))
    [task, delayed] = h.pending()
    assert task.id == r.task_id and type(task).__name__ == queue_name and task.retries == 0
    assert delayed.id == later.task_id and delayed.eta is not None
    assert task.eta is None
    ahead = delayed.eta.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()  # huey: naive UTC
    assert 50 < ahead <= 60
    assert json.loads(task.args[0])["x"] == 1
    assert h.pending_count() == 2 and f.get_message_count() == 2
    assert f.clear() == 2 and h.pending_count() == 0


def test_plain_huey_caller_reaches_the_funboost_function(cfg, queue_name, consumers, cleanup):
    cleanup(queue_name, cfg)

    @boost(make(queue_name, cfg, is_using_rpc_mode=True))
    def mul(x, y=10):
        return x * y

    consumers(mul.consume())
    huey_task(mul)(x=4, id="plain-" + queue_name)  # huey's own call: keyword arguments, huey's task id
    from funboost import AsyncResult
    assert AsyncResult("plain-" + queue_name, booster=mul).get(timeout=30) == 40


def test_huey_revocation_still_applies(cfg, queue_name, consumers, cleanup):
    """huey's revoke_by_id under funboost's worker: a revoked task does not run, a revoke_once flag is
    used up by the one skipped run (the Redis take skips huey's lookup only while nothing is revoked)."""
    cleanup(queue_name, cfg)
    ran: list[int] = []

    @boost(make(queue_name, cfg, concurrent_num=1))
    def f(x):
        ran.append(x)

    h = huey_instance(f)
    ids = [f.push(x).task_id for x in range(4)]
    h.revoke_by_id(ids[1])
    h.revoke_by_id(ids[2], revoke_once=True)
    consumers(f.consume())
    wait_until(lambda: 3 in ran, 30, message="the task after the revoked ones ran")
    assert ran == [0, 3]
    assert h.is_revoked(ids[1])
    wait_until(lambda: not h.is_revoked(ids[2]), 10, message="the revoke_once flag was used up")
    h.restore_by_id(ids[1])
    f.push(5)
    wait_until(lambda: 5 in ran, 30, message="a task after the flags were gone ran")


def test_huey_result_store_when_asked(redis_cfg, queue_name, consumers, cleanup):
    cfg = dict(redis_cfg, store_results=True)
    cleanup(queue_name, cfg)

    @boost(make(queue_name, cfg, max_retry_times=0))
    def div(a, b):
        return a / b

    consumers(div.consume())
    res = huey_task(div)(a=6, b=3)  # a plain huey caller's Result
    assert res.get(blocking=True, timeout=30) == 2.0
    bad = huey_task(div)(a=1, b=0)
    from huey.exceptions import TaskException
    with pytest.raises(TaskException) as info:
        bad.get(blocking=True, timeout=30)
    assert "ZeroDivisionError" in str(info.value.metadata)


# ---------------------------------------------------------------------------------------- controls
def test_retries_are_funboosts_and_happen_once(params, queue_name, consumers):
    flaky, _ = fw.check_retries_are_funboosts(params, queue_name, consumers)
    assert huey_task(flaky).retries == 0  # no huey retry on top
    # the failed task was settled: nothing left in huey's queue or in flight
    wait_until(lambda: flaky.broker.queue_size().as_dict() in ({"ready": 0, "in_flight": 0, "delayed": 0},
                                                                {"ready": 0, "in_flight": None, "delayed": 0}),
               10, message="queue empty")


def test_filter_and_expiry_apply_under_huey(params, queue_name, consumers):
    fw.check_filter_and_expiry(params, queue_name, consumers)


def test_pause_and_resume(params, queue_name, consumers):
    def in_queue(f) -> None:
        # a worker that was already waiting on the queue (BLMOVE, up to 1 s) may take one, and hold it
        # unrun; the others stay in huey's queue
        size = f.broker.queue_size()
        assert size.ready + (size.in_flight or 0) == 3 if size.in_flight is not None else size.ready >= 2

    fw.check_pause_and_resume(params, queue_name, consumers, while_paused=in_queue,
                              stopped=lambda f: not huey_instance(f).funboost_host.accepting.is_set())


def test_status_records(cfg, queue_name, consumers, cleanup):
    cleanup(queue_name, cfg)

    @boost(make(queue_name, cfg, max_retry_times=0, is_print_detail_exception=False,
                function_result_status_persistence_conf={"is_save_status": True, "is_save_result": True}))
    def f(x):
        return 10 / x

    consumers(f.consume())
    ok, bad = f.push(5), f.push(0)
    wait_until(lambda: len(f.query_statuses()) == 2, 30, message="two status records")
    [rec] = f.query_statuses(task_id=ok.task_id)
    assert rec["success"] and rec["result"] == 2 and rec["run_times"] == 1
    [rec] = f.query_statuses(success=False)
    assert rec["task_id"] == bad.task_id and rec["exception_type"] == "ZeroDivisionError"


def test_exception_for_requeue_goes_back(params, queue_name, consumers):
    fw.check_requeue_then_dead_letter(params, queue_name, consumers)


def test_foreign_bytes_in_the_queue_are_dead_lettered(redis_cfg, queue_name, consumers, cleanup):
    """Something huey cannot read (not a huey message) reaches the dead-letter queue; the worker goes on."""
    cleanup(queue_name, redis_cfg)

    @boost(make(queue_name, redis_cfg, is_using_rpc_mode=True))
    def f(x):
        return x

    h = huey_instance(f)
    h.storage.enqueue(b"\x80not a pickle")
    consumers(f.consume())
    assert f.push(5).get(timeout=30) == 5
    [d] = fetch_until(f.broker.dead_letter_broker(), 1, timeout=30)
    assert "dead_letter_reason" in json.loads(body_text(d))["extra"]


def test_huey_names_are_one_per_queue():
    """Names huey's Redis storage would clean alike get distinct huey names; names it keeps stay (the keys
    earlier versions created); SQLite and clean_name=False use names as they are."""
    from funboost_huey.app import huey_name
    assert huey_name("emails_1") == "emails_1"
    names = {huey_name(q) for q in ("ux3-emails", "ux3emails", "ux3.emails", "ux3:emails", "ux3 emails")}
    assert len(names) == 5 and "ux3emails" in names
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names)
    assert huey_name("ux3-emails") == huey_name("ux3-emails")  # stable: every process finds the same keys
    assert huey_name("ux3-emails", "sqlite") == "ux3-emails"
    assert huey_name("ux3-emails", "redis", clean_name=False) == "ux3-emails"


def test_queues_differing_only_in_dropped_characters_are_separate(redis_cfg, queue_name, consumers, cleanup):
    """The audit's case: 'x-emails' and 'xemails' shared huey.redis.xemails, so the consumer of one took
    the other's task and dead-lettered it as unreadable."""
    dashed, plain = f"{queue_name}-emails", f"{queue_name}emails"
    for q in (dashed, plain):
        cleanup(q, redis_cfg)

    @boost(make(dashed, redis_cfg, is_using_rpc_mode=True))
    def send_email(x):
        return ("email", x)

    @boost(make(plain, redis_cfg, is_using_rpc_mode=True))
    def other(x):
        return ("other", x)

    r_other = other.push(42)
    assert send_email.get_message_count() == 0 and other.get_message_count() == 1
    consumers(send_email.consume())
    # the other queue's task was published first: had the consumer shared its list, it took that one first
    assert send_email.push(1).get(timeout=30) == ("email", 1)
    assert other.get_message_count() == 1
    assert send_email.broker.dead_letter_broker().queue_size().ready == 0
    consumers(other.consume())
    assert r_other.get(timeout=30) == ("other", 42)


def _legacy_huey(booster):
    """A plain RedisHuey under the name earlier versions gave the booster's queue."""
    from huey import RedisHuey
    from funboost_huey.app import legacy_huey_name
    h = huey_instance(booster)
    return RedisHuey(legacy_huey_name(booster.queue_name), connection_pool=h.storage.pool)


def test_tasks_left_under_the_old_huey_name_still_run(redis_cfg, queue_name, consumers, cleanup):
    """A renamed queue takes over what an earlier version left under its old huey name (ready and delayed
    tasks); another queue's task there stays."""
    queue = f"{queue_name}-renamed"
    cleanup(queue, redis_cfg)

    @boost(make(queue, redis_cfg, is_using_rpc_mode=True))
    def f(x):
        return x * 2

    h, old = huey_instance(f), _legacy_huey(f)
    assert h.name != old.name
    try:
        ready, later = f.push(1), f.publish({"x": 2}, task_options=TaskOptions(countdown=1))
        # what an earlier version wrote: the same huey messages, under the old name's keys
        [t_ready, t_later] = h.pending()
        h.flush()
        old.storage.enqueue(h.serialize_task(t_ready))
        old.storage.add_to_schedule(h.serialize_task(t_later), t_later.eta)
        foreign = old.serialize_task(old.task(name="someone_else")(lambda: None).s())
        old.storage.enqueue(foreign)
        assert h.pending_count() == 0 and old.pending_count() == 2 and old.scheduled_count() == 1
        consumers(f.consume())
        assert ready.get(timeout=30) == 2 and later.get(timeout=30) == 4
        assert old.storage.enqueued_items() == [foreign] and old.scheduled_count() == 0
    finally:
        old.storage.flush_queue()
        old.storage.flush_schedule()


def test_a_task_of_a_renamed_queue_in_its_old_list_is_forwarded(redis_cfg, queue_name, consumers, cleanup):
    """While a queue whose name huey keeps ('xemails') runs, a task an earlier version left in the same
    list for the renamed one ('x-emails') goes to the renamed queue instead of the dead-letter queue."""
    dashed, plain = f"{queue_name}-emails", f"{queue_name}emails"
    for q in (dashed, plain):
        cleanup(q, redis_cfg)

    @boost(make(dashed, redis_cfg, is_using_rpc_mode=True))
    def send_email(x):
        return x

    @boost(make(plain, redis_cfg, is_using_rpc_mode=True))
    def other(x):
        return x

    r = send_email.push(7)
    [t] = huey_instance(send_email).pending()
    huey_instance(send_email).flush()
    huey_instance(other).storage.enqueue(huey_instance(send_email).serialize_task(t))  # the old shared list
    consumers(other.consume())
    assert other.push(1).get(timeout=30) == 1  # pushed after the left task: that one was taken first
    wait_until(lambda: send_email.get_message_count() == 1, 10, message="forwarded to its own queue")
    assert other.broker.dead_letter_broker().queue_size().ready == 0
    consumers(send_email.consume())
    assert r.get(timeout=30) == 7


def test_sqlite_sizes_and_priority(tmp_path, queue_name):
    """SqliteHuey: ready / delayed counted, in flight unknown (None: huey deleted the row), huey's
    priorities passed through."""
    opts = HueyOptions(storage="sqlite", sqlite_filename=str(tmp_path / "p.db"))
    b = HueyBroker(queue_name, opts)
    try:
        msgs = []
        for p in (1, 5, 3):
            msgs.append(OutgoingMessage(body=json.dumps({"p": p, "extra": {"task_id": f"p{p}"}}), task_id=f"p{p}",
                                        priority=p))
        later = OutgoingMessage(body=json.dumps({"p": -1, "extra": {"task_id": "later"}}), task_id="later",
                                eta=time.time() + 60)
        b.publish(msgs + [later])
        assert b.queue_size().ready == 4
        got = fetch_until(b, 3, timeout=10)
        assert [json.loads(body_text(d))["p"] for d in got] == [5, 3, 1]
        assert b.fetch(5, 0.5) == []  # the delayed one is taken and put on huey's schedule
        size = b.queue_size()
        assert (size.ready, size.in_flight, size.delayed) == (0, None, 1)
        b.ack(got)
        assert b.purge() == 1
    finally:
        b.close()


def test_booster_priority_on_sqlite_storage(tmp_path, queue_name, consumers):
    """TaskOptions(priority=...) reaches SqliteHuey (higher first): the kind's declared priority=False
    describes Redis storage and used to make core drop every priority before the broker saw it."""
    cfg = {"storage": "sqlite", "sqlite_filename": str(tmp_path / "prio.db")}
    fw.check_priority_orders(lambda queue, **kw: make(queue, cfg, **kw), queue_name, consumers)


def test_booster_priority_is_dropped_on_redis_storage(redis_cfg, queue_name, consumers, cleanup):
    """huey's Redis storage is a plain list (RedisHuey raises for a priority): dropped, the task runs."""
    cleanup(queue_name, redis_cfg)
    fw.check_priority_is_dropped(lambda queue, **kw: make(queue, redis_cfg, **kw), queue_name, consumers)


# ---------------------------------------------------------------------------------------- crash safety
def _start_worker(queue: str, marker_dir, hold: float, concurrency: int = 2) -> subprocess.Popen:
    return fw.start_script(HERE, "_crash_worker.py", queue, REDIS_URL, marker_dir, hold, concurrency)


def test_consumer_killed_mid_task_is_rerun(redis_cfg, tmp_path, queue_name, cleanup):
    cleanup(queue_name, redis_cfg)

    @boost(make(queue_name, redis_cfg))
    def work(x: int) -> int:
        return x

    def in_flight() -> None:
        # while it runs, the task is in flight (held by the living consumer), not in huey's queue
        size = work.broker.queue_size()
        assert (size.ready, size.in_flight) == (0, 1)

    fw.check_killed_workers_task_runs_again(work, lambda hold: _start_worker(queue_name, tmp_path, hold), tmp_path,
                                            hold=1, rerun_timeout=40, while_running=in_flight)


def test_a_living_consumers_long_task_is_never_handed_out_twice(redis_cfg, tmp_path, queue_name, cleanup):
    """The task runs longer than two heartbeat timeouts (default 10 s is too long for a test: the crash
    worker uses the defaults, so the task holds 25 s) while a second consumer polls and reclaims."""
    cleanup(queue_name, redis_cfg)

    @boost(make(queue_name, redis_cfg))
    def work(x: int) -> int:
        return x

    fw.check_long_task_never_handed_out_twice(
        work, lambda hold: _start_worker(queue_name, tmp_path, hold, concurrency=1), tmp_path, hold=25)


def test_sigkill_mid_run_with_1000_tasks_loses_none(redis_cfg, tmp_path, queue_name, cleanup):
    """Issue 15: a huey consumer SIGKILLed mid-run with N = 1000 tasks, a new one started: every task
    id runs (default configuration)."""
    cleanup(queue_name, redis_cfg)

    @boost(make(queue_name, redis_cfg))
    def work(x: int) -> int:
        return x

    fw.check_sigkill_mid_run_loses_none(
        work, lambda hold: _start_worker(queue_name, tmp_path, hold, concurrency=8), tmp_path, hold=0.01,
        kill_after=150, first_timeout=120,
        # the marker is written by the task body, the ack follows it: wait for the living consumer to ack
        # the last ones before it is killed, or a task killed between its marker and its ack stays in flight
        settled=lambda: _sizes(work) == (0, 0, 0), settled_timeout=30)
    assert _sizes(work) == (0, 0, 0)


def _sizes(booster) -> tuple[int, int, int]:
    size = booster.broker.queue_size()
    return size.ready, size.in_flight, size.delayed


def test_redis_a_dead_hosts_tasks_come_back_after_its_lease_expired(tmp_path, queue_name, redis_cfg, cleanup):
    """Cross-host recovery: a consumer on another host (its own hostname and pid namespace: no pid of it
    can be checked from here) holds three running tasks and its host dies; a consumer on this host runs
    them once the dead host's lease is older than heartbeat_timeout."""
    from funboost.testing.hosts import lost_host_recovery

    cfg = dict(redis_cfg, heartbeat_interval=0.5, heartbeat_timeout=2)
    cleanup(queue_name, redis_cfg)
    got = lost_host_recovery("HUEY", queue_name, cfg, tmp_path)
    print(f"\nrecovered {got['recovered_after']:.2f} s after the host's death ({got['remote_host']})")


def test_more_worker_threads_than_redis_pys_default_pool(redis_cfg, queue_name, consumers, cleanup):
    """120 huey worker threads, each blocking on the queue with a connection of the instance's pool:
    redis-py's default pool cap (100 since redis-py 7) made publishing and the workers fail with
    MaxConnectionsError once they all waited."""
    cleanup(queue_name, redis_cfg)

    @boost(make(queue_name, redis_cfg, is_using_rpc_mode=True, concurrent_num=120))
    def f(x):
        return x + 1

    consumers(f.consume())
    pool = huey_instance(f).storage.pool
    wait_until(lambda: len(pool._in_use_connections) >= 120, 60, interval=0.2,
               message="every worker thread waits on the queue with a connection")
    results = [f.push(i) for i in range(5)]
    assert [r.get(timeout=30) for r in results] == [1, 2, 3, 4, 5]


def test_unreachable_reason_hides_the_password():
    from funboost.testing import assert_unreachable_reason_hides_password
    from funboost_huey.broker import HueyBroker
    from funboost_huey.options import HueyOptions
    assert_unreachable_reason_hides_password(HueyBroker, HueyOptions(redis_url="redis://u:s3cret@127.0.0.1:1/0"), "s3cret")
