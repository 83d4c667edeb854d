"""The RQ kind end to end on real rq workers: the README example, a plain rq producer, RPC, retries,
ExceptionForRequeue, filter, expiry, countdown, pause, status records, rq's registries, workers SIGKILLed
mid-run, multi_process_consume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from rq.job import Job

from funboost import AsyncResult, BoosterParams, TaskOptions, boost
from funboost.result import RemoteTaskError
from funboost.testing import fetch_until, wait_until
from funboost.testing import frameworks as fw

from conftest import REDIS_URL
from funboost_rq import rq_queue

HERE = os.path.dirname(os.path.abspath(__file__))


def make(queue: str, **kw) -> BoosterParams:
    return fw.framework_params("RQ", queue, {"redis_url": REDIS_URL}, **kw)


# ---------------------------------------------------------------------------------------- examples
def test_readme_example(queue_name, consumers):
    add, tid = fw.check_readme_example(make, queue_name, consumers, min_countdown_delay=1.45)
    # an rq job under funboost's task id, named after the queue, with its result in rq too
    job = rq_queue(add).fetch_job(tid)
    assert job is not None and job.func_name == f"funboost_rq.tasks.{queue_name}"
    assert job.origin == queue_name and job.retries_left is None
    wait_until(lambda: job.get_status(refresh=True) == "finished", 10, message="rq marks the job finished")
    assert job.return_value() == 3


def test_plain_rq_producer_reaches_the_funboost_function(queue_name, consumers):
    @boost(make(queue_name, is_using_rpc_mode=True))
    def mul(x, y=10):
        return x * y

    consumers(mul.consume())
    job = rq_queue(mul).enqueue(f"funboost_rq.tasks.{queue_name}", x=4)
    # funboost's runner ran it under rq's job id: the RPC result is in funboost's state backend
    assert AsyncResult(job.id, booster=mul).get(timeout=30) == 40


def test_one_task_id_published_twice_keeps_both_messages(queue_name):
    """rq keeps one job hash per id: a second message of the same task id gets a job id of its own
    instead of overwriting the first (within one batch and across publishes)."""
    from funboost.plugins.broker import OutgoingMessage
    from funboost_rq import RqBroker, RqOptions

    b = RqBroker(queue_name, RqOptions(redis_url=REDIS_URL))
    try:
        body = '{{"x": {0}, "extra": {{"task_id": "same"}}}}'
        b.publish([OutgoingMessage(body=body.format(1), task_id="same"),
                   OutgoingMessage(body=body.format(2), task_id="same")])
        b.publish([OutgoingMessage(body=body.format(3), task_id="same")])
        got = fetch_until(b, 3, timeout=10)
        assert sorted(json.loads(d.body)["x"] for d in got) == [1, 2, 3]
        assert got[0].task_id == "same" and len({d.task_id for d in got}) == 3  # rq job ids
        b.ack(got)
    finally:
        b.close()


def test_count_and_clear(queue_name):
    @boost(make(queue_name))
    def f(x):
        return x

    for i in range(7):
        f.push(i)
    f.publish({"x": 99}, task_options=TaskOptions(countdown=60))
    size = f.broker.queue_size()
    assert (size.ready, size.in_flight, size.delayed) == (7, 0, 1)
    assert f.get_message_count() == 8
    assert f.clear() == 8
    assert f.get_message_count() == 0


# ---------------------------------------------------------------------------------------- controls
def test_retries_are_funboosts_and_happen_once(queue_name, consumers):
    flaky, r = fw.check_retries_are_funboosts(make, queue_name, consumers)
    # rq did not retry on top: the job is in rq's failed registry with funboost's error, once
    q = rq_queue(flaky)
    wait_until(lambda: r.task_id in q.failed_job_registry.get_job_ids(), 10, message="rq failed registry")
    job = Job.fetch(r.task_id, connection=q.connection)
    assert job.get_status() == "failed" and "ValueError" in (job.latest_result().exc_string or "")


def test_exception_for_requeue_goes_back(queue_name, consumers):
    fw.check_requeue_then_dead_letter(make, queue_name, consumers)


def test_filter_expiry_and_status_records(queue_name, consumers):
    ran: list[int] = []

    @boost(make(queue_name, do_task_filtering=True, is_using_rpc_mode=True, msg_expire_seconds=30,
                max_retry_times=0,
                function_result_status_persistence_conf={"is_save_status": True, "is_save_result": True}))
    def f(x):
        ran.append(x)
        return 10 // x

    consumers(f.consume())
    assert f.push(1).get(timeout=30) == 10
    assert f.push(1).wait(30)["run_status"] == "filtered"
    old = f.publish({"x": 2}, task_options=TaskOptions(publish_time=time.time() - 100)).wait(30)
    assert old["run_status"] == "expired"
    bad = f.push(0)
    with pytest.raises(RemoteTaskError):
        bad.get(timeout=30)
    assert ran == [1, 0]
    wait_until(lambda: f.query_statuses(task_id=bad.task_id), 10, message="status records")
    [rec] = f.query_statuses(task_id=bad.task_id)
    assert rec["task_id"] == bad.task_id and rec["exception_type"] == "ZeroDivisionError"
    assert rec["pid"] == os.getpid()


def test_pause_and_resume(queue_name, consumers):
    fw.check_pause_and_resume(
        make, queue_name, consumers, concurrent_num=2,
        # the queue's rq workers stop taking jobs
        stopped=lambda f: not f.consumer.broker._host.groups.get(queue_name),
        published=lambda f: wait_until(lambda: f.get_message_count() == 3, 10, message="3 waiting in rq"))


# ---------------------------------------------------------------------------------------- crash safety
def _start_worker(queue: str, marker_dir, hold: float, concurrency: int, hb: str = "default") -> subprocess.Popen:
    return fw.start_script(HERE, "_crash_worker.py", queue, REDIS_URL, marker_dir, hold, concurrency, hb)


_stop, _markers = fw.stop_processes, fw.markers


def _publisher(queue: str):
    @boost(make(queue))
    def work(x: int) -> int:
        return x
    return work


def test_a_killed_workers_running_job_runs_again_within_seconds(tmp_path, queue_name):
    """Default configuration: the job a SIGKILLed worker was running is not left in rq's failed registry,
    it runs again in the next worker (its lease's process is gone: the next reclaim pass moves it)."""
    work = _publisher(queue_name)
    fw.check_killed_workers_task_runs_again(work, lambda hold: _start_worker(queue_name, tmp_path, hold, 1),
                                            tmp_path, hold=120, rerun_timeout=30)
    assert rq_queue(work).failed_job_registry.count == 0


def _start_stalling_worker(queue: str, marker_dir, point: str) -> subprocess.Popen:
    return fw.start_script(HERE, "_stall_worker.py", queue, REDIS_URL, marker_dir, point, stdout=subprocess.PIPE,
                           text=True)


@pytest.mark.parametrize("point", ["blmove", "fetch", "prepare"])
def test_a_worker_killed_while_taking_a_job_gives_it_back_within_seconds(tmp_path, queue_name, point):
    """The audit's case (SIGKILL during 600 short tasks): a worker killed between rq's take of a job id and
    rq's removal of that id from the intermediate list. ``blmove`` / ``fetch``: nothing noted yet whose the
    id was, so it waited LIMBO_BACKSTOP_SECONDS (60 s); now the take and the note are one script, and a
    blocking take goes to the worker's own list first. ``prepare``: the id was started *and* in the
    intermediate list; the started entry came back at once, but the reclaim dropped the note of the
    intermediate copy, which stayed 60 s and then ran the job a second time. Default liveness settings
    (heartbeat_timeout 10 s; a dead pid on this host is judged at once)."""
    work = _publisher(queue_name)
    if point != "blmove":  # blmove: the worker first blocks on the empty queue
        work.push(7)
    stalled = _start_stalling_worker(queue_name, tmp_path, point)
    try:
        assert stalled.stdout is not None and stalled.stdout.readline().strip() == "consuming"
        if point == "blmove":
            wait_until(lambda: _markers(tmp_path, "blocking."), 30, message="the worker blocks on the empty queue")
            work.push(7)
        wait_until(lambda: _markers(tmp_path, "stalled."), 30, message=f"the worker stalled at {point}")
        assert work.broker.conn.llen(work.broker.keys.queue) == 0  # the stalled worker has taken the job
        os.kill(stalled.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        _stop(stalled)
    keys = work.broker.keys
    conn = work.broker.conn
    fresh = _start_worker(queue_name, tmp_path, 0, 1)
    try:
        # rq's own cleaning of the intermediate list, and the old backstop, take 60 s: well under that
        wait_until(lambda: (tmp_path / "done.7").exists(), 25, interval=0.1,
                   message="the killed worker's job ran in the next worker")
        wait_until(lambda: conn.llen(keys.intermediate) == 0 and conn.zcard(keys.started) == 0, 15,
                   message="no copy of the job left in rq's intermediate list or started registry")
        recovered = time.monotonic() - killed_at
    finally:
        _stop(fresh)
    assert recovered < 30, recovered
    assert _markers(tmp_path, "started.") == [f"started.7.{fresh.pid}"]  # the stalled worker never ran it
    assert conn.keys(keys.taking("*")) == []  # no job id left in a worker's own list
    assert rq_queue(work).failed_job_registry.count == 0 and conn.llen(keys.queue) == 0


def test_a_living_workers_long_job_is_never_handed_out_twice(tmp_path, queue_name):
    """A job runs four heartbeat timeouts long while a second worker consumes and reclaims on the same
    queue: the first worker's lease keeps the job its own."""
    work = _publisher(queue_name)
    fw.check_long_task_never_handed_out_twice(
        work, lambda hold: _start_worker(queue_name, tmp_path, hold, 1, "0.5,2"), tmp_path, hold=8)


def test_sigkill_mid_run_with_1000_tasks_loses_none(tmp_path, queue_name):
    """Issue 15: a worker process SIGKILLed mid-run with N = 1000 tasks; a new worker runs every task id."""
    n = 1000
    work = _publisher(queue_name)
    q = rq_queue(work)
    fw.check_sigkill_mid_run_loses_none(
        work, lambda hold: _start_worker(queue_name, tmp_path, hold, 4), tmp_path, n=n, hold=0.01, kill_after=150,
        first_timeout=120,
        # the task body writes the marker before rq finishes the job: wait while the worker lives, or a job
        # killed between the two stays started
        settled=lambda: q.started_job_registry.count == 0)
    assert q.failed_job_registry.count == 0 and q.count == 0


def test_jobs_of_a_long_dead_holder_run_again_instead_of_failing(queue_name, consumers):
    """A holder died long ago (its lease gone, its started-registry entry expired) and no funboost consumer
    ran since: the next consumer puts the job back before rq's maintenance in its new workers could move
    it to the FailedJobRegistry as abandoned."""
    from funboost.plugins.broker import OutgoingMessage
    from funboost_rq import RqBroker, RqOptions
    from funboost_rq.storage import drop_lease

    ran: list[int] = []

    @boost(make(queue_name, is_using_rpc_mode=True))
    def f(x):
        ran.append(x)
        return x

    holder = RqBroker(queue_name, RqOptions(redis_url=REDIS_URL))
    holder.publish([OutgoingMessage(body='{"x": 5, "extra": {"task_id": "long-dead"}}', task_id="long-dead")])
    [d] = holder.fetch(1, 10)
    entry = d.tag[0]
    # the holder "dies": no more renewals, no lease, its entry long expired
    holder._lease.stop()
    drop_lease(holder.conn, holder._lease.consumer_id)
    holder.conn.zadd(holder.keys.started, {entry: time.time() - 3600})
    holder._lease = None
    holder._held.clear()
    holder.close()
    consumers(f.consume())
    assert AsyncResult("long-dead", booster=f).get(timeout=30) == 5
    q = rq_queue(f)
    assert q.failed_job_registry.count == 0 and ran == [5]


def test_a_job_pulled_by_a_living_broker_stays_with_it(queue_name):
    """The pull path holds a lease too: another broker reclaiming on the queue never takes a job that a
    living broker holds, however long it holds it."""
    from funboost_rq import RqBroker, RqOptions

    opts = RqOptions(redis_url=REDIS_URL, heartbeat_interval=0.3, heartbeat_timeout=1)
    holder, poller = RqBroker(queue_name, opts), RqBroker(queue_name, opts)
    try:
        # four heartbeat timeouts, a reclaim pass every 0.3 s
        fw.check_pulled_message_stays_with_its_holder(
            holder, poller, watch=4, poll=0.3,
            before_poll=lambda: poller._lease and poller._lease.restart_reclaim_schedule())
        assert holder.queue_size().in_flight == 0
    finally:
        holder.close()
        poller.close()


def test_two_boosters_share_one_host_and_one_can_leave(queue_name, consumers):
    other = f"{queue_name}_b"

    @boost(make(queue_name, is_using_rpc_mode=True, concurrent_num=2))
    def a(x):
        return ("a", x)

    @boost(make(other, is_using_rpc_mode=True, concurrent_num=3))
    def b(x):
        return ("b", x)

    try:
        a.consume()
        consumers(b.consume())
        assert a.push(1).get(timeout=30) == ("a", 1) and b.push(2).get(timeout=30) == ("b", 2)
        host = a.consumer.broker._host
        assert host is b.consumer.broker._host
        assert len(host.groups[queue_name]) == 2 and len(host.groups[other]) == 3
        a.stop_consume(10)
        assert queue_name not in host.groups
        assert b.push(3).get(timeout=30) == ("b", 3)  # the other queue goes on
        a.push(4)
        wait_until(lambda: a.get_message_count() == 1, 10, message="a's job waits in rq")
    finally:
        from conftest import drop_queue
        drop_queue(other)


def test_a_dead_hosts_jobs_come_back_after_its_lease_expired(tmp_path, queue_name):
    """Cross-host recovery: a worker on another host (its own hostname and pid namespace: no pid of it can
    be checked from here) holds three started jobs and its host dies; a worker on this host runs them once
    the dead host's lease is older than heartbeat_timeout."""
    from funboost.testing.hosts import lost_host_recovery

    got = lost_host_recovery("RQ", queue_name, {"redis_url": REDIS_URL, "heartbeat_interval": 0.5,
                                                "heartbeat_timeout": 2}, tmp_path)
    print(f"\nrecovered {got['recovered_after']:.2f} s after the host's death ({got['remote_host']})")


def test_more_worker_threads_than_redis_pys_default_pool(queue_name, consumers):
    """120 SimpleWorker threads, each blocking on its queue with a connection of the process's shared
    client: redis-py's default pool cap (100 since redis-py 7) made publishing and the workers themselves
    fail with MaxConnectionsError once they all waited."""
    from rq import Worker

    from funboost_rq import rq_queue

    @boost(make(queue_name, is_using_rpc_mode=True, concurrent_num=120))
    def f(x):
        return x + 1

    consumers(f.consume())
    q = rq_queue(f)
    wait_until(lambda: len(Worker.all(queue=q)) >= 120, 60, interval=0.2, message="120 rq workers registered")
    results = [f.push(i) for i in range(5)]
    assert [r.get(timeout=30) for r in results] == [1, 2, 3, 4, 5]


def test_reclaim_leaves_a_living_workers_intermediate_job_alone(queue_name):
    """Found by tests/reliability (SIGKILL at full size, a loaded machine): a job id that a living worker had
    moved into rq's intermediate list was put back after heartbeat_timeout because its worker had not
    registered it yet, and ran twice. Now the worker notes its lease next to the id: the reclaim puts the id
    back at once when that lease is dead, never while it lives, and after LIMBO_BACKSTOP_SECONDS when nobody
    noted it."""
    from funboost.engine.liveness import ConsumerLease
    from funboost_rq import RqBroker, RqOptions, storage

    b = RqBroker(queue_name, RqOptions(redis_url=REDIS_URL))
    conn, keys = b.conn, b.keys
    live, dead = f"live-{uuid.uuid4().hex[:8]}", f"dead-{uuid.uuid4().hex[:8]}"
    lease = ConsumerLease(queue_name, f"me-{uuid.uuid4().hex[:8]}", heartbeat_interval=0.3, heartbeat_timeout=1.5,
                          renew=lambda info: None)
    now = time.time()
    try:
        conn.hset(storage.LEASES_KEY, live, json.dumps(["elsewhere", 1, now]))  # renewed just now
        conn.hset(storage.LEASES_KEY, dead, json.dumps(["elsewhere", 1, now - 60]))  # silent for a minute
        for job_id in ("j-live", "j-dead", "j-unnoted-recent", "j-unnoted-old"):
            conn.rpush(keys.intermediate, job_id)
        storage.note_taken(conn, keys, "j-live", live)
        storage.note_taken(conn, keys, "j-dead", dead)
        # first seen by earlier passes: both past heartbeat_timeout, only one past the backstop
        conn.hset(keys.limbo, mapping={"j-live": now - 30, "j-unnoted-recent": now - 30,
                                       "j-unnoted-old": now - storage.LIMBO_BACKSTOP_SECONDS - 1})
        assert storage.reclaim(conn, lease, [keys]) == 2
        back = {x.decode() for x in conn.lrange(keys.queue, 0, -1)}
        waiting = {x.decode() for x in conn.lrange(keys.intermediate, 0, -1)}
        assert back == {"j-dead", "j-unnoted-old"}
        assert waiting == {"j-live", "j-unnoted-recent"}
    finally:
        conn.hdel(storage.LEASES_KEY, live, dead)
        conn.delete(keys.intermediate, keys.limbo, keys.limbo_holder, keys.queue)
        b.close()


def test_unreachable_reason_hides_the_password():
    from funboost.testing import assert_unreachable_reason_hides_password
    from funboost_rq.broker import RqBroker
    from funboost_rq.options import RqOptions
    assert_unreachable_reason_hides_password(RqBroker, RqOptions(redis_url="redis://u:s3cret@127.0.0.1:1/0"), "s3cret")
