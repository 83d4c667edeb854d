"""The DRAMATIQ kind end to end: README example, RPC, retries, filter, expiry, countdown, pause,
ExceptionForRequeue, status records, a SIGKILLed worker (N = 1000), multi_process_consume.
Most tests run on Redis and on RabbitMQ."""
from __future__ import annotations

import os
import subprocess
import time
from functools import partial

import dramatiq

from funboost import BoosterParams, boost
from funboost.testing import frameworks as fw
from funboost.testing import wait_until

from conftest import REDIS_URL, URLS, check
from funboost_dramatiq import dramatiq_broker

HERE = os.path.dirname(os.path.abspath(__file__))


def make(queue: str, url: str, **kw) -> BoosterParams:
    return fw.framework_params("DRAMATIQ", queue, {"broker_url": url}, **kw)


params = fw.params_fixture("DRAMATIQ")  # on the test's broker (Redis or RabbitMQ), its queues dropped afterwards


def test_readme_example(params, queue_name, consumers):
    fw.check_readme_example(params, queue_name, consumers)


def test_plain_dramatiq_sender_reaches_the_funboost_function(params, queue_name, consumers):
    @boost(params(queue_name, is_using_rpc_mode=True))
    def mul(x, y=10):
        return x * y

    consumers(mul.consume())
    msg = dramatiq.Message(queue_name=queue_name, actor_name=queue_name, args=(), kwargs={"x": 4}, options={})
    dramatiq_broker(mul).enqueue(msg)
    from funboost import AsyncResult
    assert AsyncResult(msg.message_id, booster=mul).get(timeout=30) == 40  # under dramatiq's message id


def test_count_and_clear(params, queue_name):
    fw.check_count_and_clear(params, queue_name)


def test_rabbitmq_max_priority_orders_booster_publishes(queue_name, cleanup_queues, consumers):
    """TaskOptions(priority=...) on RabbitMQ with max_priority (x-max-priority queues): higher first. The kind
    declares priority=False (Redis, its default, has none), which used to make core drop every priority."""
    url = URLS["amqp"]
    check(url)
    cleanup_queues(url, queue_name)
    fw.check_priority_orders(partial(make, url=url), queue_name, consumers, cfg={"max_priority": 9})


def test_priority_is_dropped_without_rabbitmq_max_priority(params, broker_url, queue_name, consumers):
    """Redis has no priorities, nor RabbitMQ queues without max_priority: dropped, the task still runs."""
    fw.check_priority_is_dropped(params, queue_name, consumers,
                                 cfg={"max_priority": 9} if broker_url == URLS["redis"] else {})


def test_retries_are_funboosts_and_failure_lands_in_dramatiqs_xq(params, broker_url, queue_name, consumers):
    # a dramatiq retry would have been enqueued within a second (none may come)
    flaky, r = fw.check_retries_are_funboosts(params, queue_name, consumers, no_more_runs_for=1.0)
    b = dramatiq_broker(flaky)
    if broker_url.startswith("redis"):  # failed for good: dramatiq's own dead-letter set holds the message
        wait_until(lambda: b.client.zscore(f"{b.namespace}:{queue_name}.XQ",
                                           _redis_id(b, queue_name, r.task_id)) is not None, 10,
                   message="failed message in <queue>.XQ")


def _redis_id(b, queue, task_id):
    for rid, data in b.client.hgetall(f"{b.namespace}:{queue}.XQ.msgs").items():
        if dramatiq.Message.decode(data).message_id == task_id:
            return rid
    return "none"


def test_filter_expiry_and_status_records(params, queue_name, consumers):
    fw.check_filter_and_expiry(params, queue_name, consumers)


def test_exception_for_requeue_goes_back(params, queue_name, consumers):
    from funboost import ExceptionForRequeue
    seen: list[int] = []

    @boost(params(queue_name, is_using_rpc_mode=True))
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


def test_pause_and_resume(params, queue_name, consumers):
    # a message the paused consumer thread still receives is given back (holds_messages_while_paused = False)
    fw.check_pause_and_resume(params, queue_name, consumers)


def test_two_boosters_share_one_worker_and_a_late_one_joins(params, broker_url, queue_name, cleanup_queues,
                                                             consumers):
    other = queue_name + "_b"
    cleanup_queues(broker_url, other)

    @boost(params(queue_name, is_using_rpc_mode=True))
    def a(x):
        return x + 1

    @boost(params(other, is_using_rpc_mode=True))
    def b(x):
        return x + 2

    consumers(a.consume())
    assert a.push(1).get(timeout=30) == 2
    consumers(b.consume())  # joins the running worker
    assert b.push(1).get(timeout=30) == 3


# ---------------------------------------------------------------------------------------- crash safety
def _start_worker(queue: str, url: str, marker_dir, hold: float, hb: str = "default",
                  concurrency: int = 2) -> subprocess.Popen:
    return fw.start_script(HERE, "_crash_worker.py", queue, url, marker_dir, hold, hb, concurrency)


_markers = fw.markers


def test_sigkill_mid_run_with_1000_tasks_every_task_id_runs(broker_url, tmp_path, queue_name, cleanup_queues):
    """Default configuration: a worker SIGKILLed after 100 of 1000 tasks, a new worker started: every task
    id runs (Redis: the dead worker's heartbeat goes stale and the survivor's forced maintenance puts its
    unacked messages back; RabbitMQ: the connection dropped, the server redelivers at once)."""
    url = broker_url
    cleanup_queues(url, queue_name)

    @boost(make(queue_name, url))
    def work(x: int) -> int:
        return x

    fw.check_sigkill_mid_run_loses_none(work, lambda hold: _start_worker(queue_name, url, tmp_path, hold, concurrency=4),
                                        tmp_path, hold=0.02, kill_after=100, first_timeout=60)


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

    fw.check_long_task_never_handed_out_twice(
        work, lambda hold: _start_worker(queue_name, url, tmp_path, hold, "2", concurrency=1), tmp_path, hold=8)


def test_redis_killed_workers_task_comes_back_within_the_heartbeat_timeout(tmp_path, queue_name, cleanup_queues):
    url = REDIS_URL
    check(url)
    cleanup_queues(url, queue_name)

    @boost(make(queue_name, url))
    def work(x: int) -> int:
        return x

    killed_at = fw.check_killed_workers_task_runs_again(
        work, lambda hold: _start_worker(queue_name, url, tmp_path, hold), tmp_path, hold=1, rerun_timeout=60)
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
