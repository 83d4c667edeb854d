"""The DRAMATIQ kind end to end: README example, RPC, retries, filter, expiry, countdown, pause,
ExceptionForRequeue, status records, a SIGKILLed worker (N = 1000), multi_process_consume.
Most tests run on Redis and on RabbitMQ."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import dramatiq
import pytest

from funboost import BoosterParams, TaskOptions, boost
from funboost.result import RemoteTaskError
from funboost.testing import wait_until

from conftest import REDIS_URL, URLS, check
from funboost_dramatiq import dramatiq_broker

HERE = os.path.dirname(os.path.abspath(__file__))


def make(queue: str, url: str, **kw):
    kw.setdefault("state_backend", "memory")
    kw.setdefault("log_to_console", False)
    cfg = dict(kw.pop("cfg", {}), broker_url=url)
    return BoosterParams(queue_name=queue, broker_kind="DRAMATIQ", broker_exclusive_config=cfg, **kw)


@pytest.fixture
def url(broker_url, queue_name, cleanup_queues):
    cleanup_queues(broker_url, queue_name)
    return broker_url


def test_readme_example(url, queue_name, consumers):
    @boost(make(queue_name, url, is_using_rpc_mode=True, concurrent_num=4))
    def add(x, y):
        return x + y

    assert add(1, 2) == 3
    consumers(add.consume())
    assert add.push(1, y=2).get(timeout=30) == 3
    tid = f"t1-{uuid.uuid4().hex}"
    r = add.publish({"x": 1, "y": 2}, task_id=tid)
    assert r.task_id == tid and r.get(timeout=30) == 3
    t0 = time.time()
    assert add.publish({"x": 2, "y": 2}, task_options=TaskOptions(countdown=1.5)).get(timeout=30) == 4
    assert time.time() - t0 >= 1.4
    results = add.push_many([(i, i) for i in range(20)])
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]


def test_plain_dramatiq_sender_reaches_the_funboost_function(url, queue_name, consumers):
    @boost(make(queue_name, url, is_using_rpc_mode=True))
    def mul(x, y=10):
        return x * y

    consumers(mul.consume())
    msg = dramatiq.Message(queue_name=queue_name, actor_name=queue_name, args=(), kwargs={"x": 4}, options={})
    dramatiq_broker(mul).enqueue(msg)
    from funboost import AsyncResult
    assert AsyncResult(msg.message_id, booster=mul).get(timeout=30) == 40  # under dramatiq's message id


def test_count_and_clear(url, queue_name):
    @boost(make(queue_name, url))
    def f(x):
        return x

    for i in range(7):
        f.push(i)
    wait_until(lambda: f.get_message_count() == 7, 10, message="7 waiting")
    assert f.clear() == 7
    assert f.get_message_count() == 0


def test_rabbitmq_max_priority_orders_booster_publishes(queue_name, cleanup_queues, consumers):
    """TaskOptions(priority=...) on RabbitMQ with max_priority (x-max-priority queues): higher first. The kind
    declares priority=False (Redis, its default, has none), which used to make core drop every priority."""
    url = URLS["amqp"]
    check(url)
    cleanup_queues(url, queue_name)
    order: list[int] = []

    @boost(make(queue_name, url, concurrent_num=1, is_using_rpc_mode=True, cfg={"max_priority": 9}))
    def job(i):
        order.append(i)

    assert job.broker.supports_priority
    rs = [job.publish({"i": i}, task_options=TaskOptions(priority=0)) for i in range(3)]
    rs += [job.publish({"i": i}, task_options=TaskOptions(priority=9)) for i in range(3, 6)]
    wait_until(lambda: job.get_message_count() == 6, 10, message="6 waiting")
    consumers(job.consume())
    for r in rs:
        r.wait(30)
    assert order == [3, 4, 5, 0, 1, 2]


def test_priority_is_dropped_without_rabbitmq_max_priority(broker_url, queue_name, cleanup_queues, consumers):
    """Redis has no priorities, nor RabbitMQ queues without max_priority: dropped, the task still runs."""
    cleanup_queues(broker_url, queue_name)

    @boost(make(queue_name, broker_url, is_using_rpc_mode=True,
                cfg={"max_priority": 9} if broker_url == URLS["redis"] else {}))
    def job(i):
        return i

    assert not job.broker.supports_priority
    r = job.publish({"i": 1}, task_options=TaskOptions(priority=9))
    consumers(job.consume())
    assert r.get(timeout=30) == 1


def test_retries_are_funboosts_and_failure_lands_in_dramatiqs_xq(url, queue_name, consumers):
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @boost(make(queue_name, url, is_using_rpc_mode=True, max_retry_times=2, is_print_detail_exception=False))
    def flaky(key, fail_times):
        with lock:
            calls[key] = calls.get(key, 0) + 1
            n = calls[key]
        if n <= fail_times:
            raise ValueError(f"attempt {n}")
        return n

    consumers(flaky.consume())
    assert flaky.push("a", 2).get(timeout=30) == 3
    r = flaky.push("b", 10)
    with pytest.raises(RemoteTaskError):
        r.get(timeout=30)
    assert r.wait()["run_times"] == 3
    time.sleep(1.0)  # a dramatiq retry would have been enqueued by now (none may come)
    assert calls == {"a": 3, "b": 3}
    b = dramatiq_broker(flaky)
    if url.startswith("redis"):  # failed for good: dramatiq's own dead-letter set holds the message
        wait_until(lambda: b.client.zscore(f"{b.namespace}:{queue_name}.XQ",
                                           _redis_id(b, queue_name, r.task_id)) is not None, 10,
                   message="failed message in <queue>.XQ")


def _redis_id(b, queue, task_id):
    for rid, data in b.client.hgetall(f"{b.namespace}:{queue}.XQ.msgs").items():
        if dramatiq.Message.decode(data).message_id == task_id:
            return rid
    return "none"


def test_filter_expiry_and_status_records(url, queue_name, consumers):
    ran: list[int] = []

    @boost(make(queue_name, url, do_task_filtering=True, is_using_rpc_mode=True, msg_expire_seconds=30))
    def f(x):
        ran.append(x)
        return x

    consumers(f.consume())
    first = f.push(1)
    assert first.get(timeout=30) == 1
    assert first.wait(30)["run_status"] == "finish"
    assert f.push(1).wait(30)["run_status"] == "filtered"
    old = f.publish({"x": 2}, task_options=TaskOptions(publish_time=time.time() - 100)).wait(30)
    assert old["run_status"] == "expired"
    assert f.push(3).get(timeout=30) == 3
    assert ran == [1, 3]


def test_exception_for_requeue_goes_back(url, queue_name, consumers):
    from funboost import ExceptionForRequeue
    seen: list[int] = []

    @boost(make(queue_name, url, is_using_rpc_mode=True))
    def f(x):
        seen.append(x)
        if len(seen) == 1:
            raise ExceptionForRequeue("not now")
        return x * 2

    consumers(f.consume())
    r = f.push(5)
    wait_until(lambda: len(seen) == 2, 30, message="the requeued task ran again")
    assert r.get(timeout=30) == 10
    assert seen == [5, 5]


def test_pause_and_resume(url, queue_name, consumers):
    ran: list[int] = []

    @boost(make(queue_name, url, is_using_rpc_mode=True))
    def f(x):
        ran.append(x)

    consumers(f.consume())
    f.push(0).wait(30)
    f.pause()
    wait_until(lambda: f.consumer.paused, 10, message="consumer sees the pause flag")
    time.sleep(1.2)  # let the host pause dramatiq's consumer thread of the queue
    rs = [f.push(i) for i in range(1, 4)]
    time.sleep(1.5)  # nothing may run while paused
    assert ran == [0]
    f.resume()
    for r in rs:
        r.wait(30)
    assert sorted(ran) == [0, 1, 2, 3]


def test_two_boosters_share_one_worker_and_a_late_one_joins(url, queue_name, cleanup_queues, consumers):
    other = queue_name + "_b"
    cleanup_queues(url, other)

    @boost(make(queue_name, url, is_using_rpc_mode=True))
    def a(x):
        return x + 1

    @boost(make(other, url, is_using_rpc_mode=True))
    def b(x):
        return x + 2

    consumers(a.consume())
    assert a.push(1).get(timeout=30) == 2
    consumers(b.consume())  # joins the running worker
    assert b.push(1).get(timeout=30) == 3


# ---------------------------------------------------------------------------------------- crash safety
def _start_worker(queue: str, url: str, marker_dir, hold: float, hb: str = "default", concurrency: int = 2):
    script = os.path.join(HERE, "_crash_worker.py")
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, script, queue, url, str(marker_dir), str(hold), hb, str(concurrency)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(*procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _markers(path, prefix: str) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(prefix))


def test_sigkill_mid_run_with_1000_tasks_every_task_id_runs(broker_url, tmp_path, queue_name, cleanup_queues):
    """Default configuration: a worker SIGKILLed after 100 of 1000 tasks, a new worker started: every task
    id runs (Redis: the dead worker's heartbeat goes stale and the survivor's forced maintenance puts its
    unacked messages back; RabbitMQ: the connection dropped, the server redelivers at once)."""
    url = broker_url
    cleanup_queues(url, queue_name)

    @boost(make(queue_name, url))
    def work(x: int) -> int:
        return x

    n = 1000
    work.push_many([(i,) for i in range(n)])
    first = _start_worker(queue_name, url, tmp_path, 0.02, concurrency=4)
    try:
        wait_until(lambda: len(_markers(tmp_path, "done.")) >= 100, 60, message="100 tasks done")
        os.kill(first.pid, signal.SIGKILL)
    finally:
        _stop(first)
    assert len(_markers(tmp_path, "done.")) < n
    second = _start_worker(queue_name, url, tmp_path, 0, concurrency=4)
    try:
        wait_until(lambda: len(_markers(tmp_path, "done.")) == n, 180, interval=0.2,
                   message=f"all {n} task ids ran")
    finally:
        _stop(second)
    assert {f"done.{i}" for i in range(n)} == set(_markers(tmp_path, "done."))


def test_redis_a_living_workers_long_task_is_never_handed_out_twice(tmp_path, queue_name, cleanup_queues):
    """The task runs four times longer than the heartbeat timeout with every thread of its worker busy
    (dramatiq sends no command then) while a second worker polls and runs maintenance: the first
    worker's ticker heartbeat keeps its message from being reclaimed."""
    url = REDIS_URL
    check(url)
    cleanup_queues(url, queue_name)

    @boost(make(queue_name, url, cfg={"heartbeat_timeout": 2}))
    def work(x: int) -> int:
        return x

    work.push(7)
    first = _start_worker(queue_name, url, tmp_path, 8, "2", concurrency=1)
    second = None
    try:
        wait_until(lambda: _markers(tmp_path, "started.7."), 30, message="the long task started")
        second = _start_worker(queue_name, url, tmp_path, 0, "2", concurrency=1)
        work.push(8)
        wait_until(lambda: (tmp_path / "done.8").exists(), 30, message="the second worker consumes")
        wait_until(lambda: (tmp_path / "done.7").exists(), 60, message="the long task ended")
    finally:
        # the second worker goes first: done.7 is written before the first worker acks 7, and a SIGKILL of
        # the first worker in between leaves 7 unacked by a dead holder, which a second worker still alive
        # would rightly run again (at-least-once); that is not the double hand-out this test is about
        _stop(*(p for p in (second, first) if p is not None))
    assert len(_markers(tmp_path, "started.7.")) == 1, _markers(tmp_path, "started.")


def test_redis_killed_workers_task_comes_back_within_the_heartbeat_timeout(tmp_path, queue_name, cleanup_queues):
    url = REDIS_URL
    check(url)
    cleanup_queues(url, queue_name)

    @boost(make(queue_name, url))
    def work(x: int) -> int:
        return x

    work.push(7)
    slow = _start_worker(queue_name, url, tmp_path, 1)
    try:
        wait_until(lambda: _markers(tmp_path, "started.7."), 30, message="the task started in the first worker")
        os.kill(slow.pid, signal.SIGKILL)
    finally:
        _stop(slow)
    killed_at = time.monotonic()
    fresh = _start_worker(queue_name, url, tmp_path, 0)
    try:
        wait_until(lambda: (tmp_path / "done.7").exists(), 60, interval=0.1,
                   message="the killed worker's task ran again in another worker (default configuration)")
    finally:
        _stop(fresh)
    assert len(_markers(tmp_path, "started.7.")) == 2
    assert time.monotonic() - killed_at < 40  # default heartbeat_timeout 10 s (+ start-up), not dramatiq's luck


def test_redis_a_dead_hosts_messages_come_back_after_its_heartbeat_expired(tmp_path, queue_name, cleanup_queues):
    """Cross-host recovery: a worker on another host (its own hostname and pid namespace) holds three running
    tasks and its host dies; a worker on this host runs them once the dead broker's heartbeat is older than
    heartbeat_timeout."""
    from funboost.testing.hosts import lost_host_recovery

    check(REDIS_URL)
    cleanup_queues(REDIS_URL, queue_name)
    got = lost_host_recovery("DRAMATIQ", queue_name, {"broker_url": REDIS_URL, "heartbeat_timeout": 2}, tmp_path)
    print(f"\nrecovered {got['recovered_after']:.2f} s after the host's death ({got['remote_host']})")


def test_unreachable_reason_hides_the_password():
    from funboost.testing import assert_unreachable_reason_hides_password
    from funboost_dramatiq.broker import DramatiqBroker
    from funboost_dramatiq.options import DramatiqOptions
    assert_unreachable_reason_hides_password(DramatiqBroker, DramatiqOptions(broker_url="redis://u:s3cret@127.0.0.1:1/0"), "s3cret")
