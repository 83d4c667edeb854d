"""Engine task controls, on every broker listed in FUNBOOST_TEST_BROKERS (default: memory; the root tox
environment adds sqlite). Real brokers, conditions with deadlines."""
import asyncio
import os
import random
import threading
import time

import pytest

from funboost import (BoosterParams, ExceptionForPushToDlxqueue, ExceptionForRequeue, RpcNotEnabled, TaskOptions,
                      boost, fct)
from funboost.testing import fetch_until, wait_until

KINDS = [k.strip() for k in os.environ.get("FUNBOOST_TEST_BROKERS", "memory").split(",") if k.strip()]
# the gevent / eventlet tox environments run this whole module in that mode
MODE = os.environ.get("FUNBOOST_TEST_CONCURRENT_MODE", "threading")
GREEN = MODE in ("gevent", "eventlet")


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def make(kind, qname):
    made = []

    def _make(func, **kw):
        kw.setdefault("state_backend", "memory")
        kw.setdefault("log_to_console", False)
        kw.setdefault("concurrent_mode", MODE)
        b = boost(BoosterParams(queue_name=kw.pop("queue_name", qname), broker_kind=kind, **kw))(func)
        made.append(b)
        return b
    yield _make
    for b in made:
        b.stop_consume(5)
        b.clear()


def test_ten_thread_consumer_replaces_a_thread_pool(make):
    running, peak, done = [0], [0], []
    lock = threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            done.append(i)

    f = make(work, concurrent_num=10)
    f.consume()
    for i in range(100):
        f.push(i)
    wait_until(lambda: len(done) == 100, 20, message="100 tasks")
    assert sorted(done) == list(range(100))
    assert peak[0] == 10


def _measure_rate(make, qps, n, max_sleep):
    starts = []

    def work(i):
        starts.append(time.monotonic())
        time.sleep(random.uniform(0, max_sleep))

    f = make(work, qps=qps)
    for i in range(n):
        f.push(i)
    f.consume()
    wait_until(lambda: len(starts) >= n, n / qps + 20, message=f"{n} starts")
    starts.sort()
    return (len(starts) - 1) / (starts[-1] - starts[0])


@pytest.mark.parametrize("qps,n", [(5, 16), (50, 150)])
def test_qps_is_held_whatever_the_function_duration(make, qps, n):
    rate = _measure_rate(make, qps, n, 2.0)
    # never above the limit (the property that matters); below it only as far as a loaded machine delays
    # the starts: a CI run with every core busy held 50 qps at 32/s while threads were being added for
    # functions of up to 2 s, so the lower bound only catches a limiter that holds a fraction of the rate
    assert qps * 0.5 <= rate <= qps * 1.1, rate


def test_low_qps(make):
    rate = _measure_rate(make, 0.5, 4, 2.0)
    assert 0.4 <= rate <= 0.55, rate


@pytest.mark.skipif(GREEN, reason="asyncio mode does not mix with a monkey-patched interpreter")
def test_asyncio_mode_runs_200_coroutines_concurrently(make):
    done = []

    async def work(i):
        await asyncio.sleep(1)
        assert fct.task_id
        done.append(i)

    f = make(work, concurrent_mode="async", concurrent_num=200)
    f.publish_many({"i": i} for i in range(200))
    t0 = time.monotonic()
    f.consume()
    wait_until(lambda: len(done) == 200, 30, message="200 coroutines")
    assert time.monotonic() - t0 < 20.0  # one after another they would take 200 s


def test_timeout_stops_a_stuck_call_and_the_next_message_runs(make):
    done, statuses = [], []

    def work(x):
        if x == 0:
            time.sleep(30)
        done.append(x)

    f = make(work, function_timeout=0.5, max_retry_times=0, user_custom_record_process_info_func=statuses.append)
    f.consume()
    f.push(0)
    f.push(1)
    wait_until(lambda: len(statuses) == 2, 10, message="both finished")
    by_x = {s.params["x"]: s for s in statuses}
    assert by_x[0].timed_out and not by_x[0].success and by_x[0].exception_type == "FunctionTimeoutError"
    assert by_x[1].success
    assert done == [1]


def test_per_message_timeout_override(make):
    statuses = []
    f = make(lambda x: time.sleep(x), max_retry_times=0, user_custom_record_process_info_func=statuses.append)
    f.consume()
    f.publish({"x": 5}, task_options=TaskOptions(function_timeout=0.3))
    wait_until(lambda: statuses, 10)
    assert statuses[0].timed_out


def test_fct_context_in_sync_async_and_timeout_threads(make, qname):
    seen = []

    def sync_work(x):
        seen.append(("sync", fct.task_id, fct.function_params, fct.full_msg["extra"]["task_id"]))

    f = make(sync_work, function_timeout=5)  # runs in a killable thread: the context is copied in
    f.consume()
    r = f.push(1)
    wait_until(lambda: seen, 10)
    assert seen[0][1] == r.task_id == seen[0][3] and seen[0][2] == {"x": 1}
    if GREEN:
        return

    async def async_work(x):
        await asyncio.sleep(0)
        seen.append(("async", fct.task_id, fct.function_params, fct.attempt))

    g = make(async_work, queue_name=qname + "_async", concurrent_mode="async")
    g.consume()
    r2 = g.push(2)
    wait_until(lambda: len(seen) == 2, 10)
    assert seen[1] == ("async", r2.task_id, {"x": 2}, 1)


def test_message_expiry_drops_old_messages(make):
    done = []
    f = make(lambda x: done.append(x))
    f.publish({"x": 1}, task_options=TaskOptions(msg_expire_seconds=5, publish_time=time.time() - 60))
    f.publish({"x": 2}, task_options=TaskOptions(msg_expire_seconds=5))
    f.consume()
    wait_until(lambda: done == [2], 10)
    wait_until(lambda: f.get_message_count() == 0, 5)
    assert done == [2]


def test_task_filter_with_ttl(make):
    done = []
    f = make(lambda x: done.append(x), do_task_filtering=True, task_filtering_expire_seconds=1.5,
             concurrent_num=1)
    f.consume()
    f.push(1)
    wait_until(lambda: done == [1], 10)
    f.push(1)
    f.push(2)
    wait_until(lambda: done == [1, 2], 10)
    time.sleep(0.2)
    assert done == [1, 2]  # the second push(1) was filtered
    wait_until(lambda: (f.push(1), time.sleep(0.3), done.count(1) == 2)[2], 10, interval=0.3,
               message="filter key expired")


def test_the_filter_holds_identical_tasks_that_arrive_together(make):
    """Five pushes of the same arguments taken by five workers at once: one runs, the others are filtered once
    it succeeded (the key was recorded only after a success, so all five passed the check and ran). When the
    running one fails, a waiting duplicate runs instead."""
    runs = []
    lock = threading.Lock()

    def work(x):
        with lock:
            runs.append(x)
            first_of_fail = x == "fail" and runs.count("fail") == 1
        time.sleep(0.5)
        if first_of_fail:
            raise ValueError("the first 'fail' fails")

    f = make(work, do_task_filtering=True, concurrent_num=10, max_retry_times=0)
    for _ in range(5):
        f.push("same")
    f.push("other")
    for _ in range(2):
        f.push("fail")
    f.consume()
    wait_until(lambda: sorted(runs) == ["fail", "fail", "other", "same"], 20, message=f"runs so far {runs}")
    wait_until(lambda: f.get_message_count() == 0, 10)
    time.sleep(1.0)  # nothing else may run: the absence is checked over a short time
    assert sorted(runs) == ["fail", "fail", "other", "same"], runs


def test_countdown_delay_does_not_block_other_messages(make):
    done = []
    f = make(lambda x: done.append((x, time.time())))
    t0 = time.time()
    f.publish({"x": "late"}, task_options=TaskOptions(countdown=1.5))
    f.push("now")
    f.consume()
    wait_until(lambda: len(done) == 2, 10)
    assert done[0][0] == "now"
    assert done[1][0] == "late" and done[1][1] - t0 >= 1.45


def test_misfire_grace_time_skips_a_delayed_task_that_is_too_late(make):
    """TaskOptions(misfire_grace_time=...) as in the original (APScheduler's misfire): a delayed task
    that reaches its consumer later than its run time plus the grace time is not run (status expired);
    without the option, or within the grace time, it runs however late."""
    done = []
    f = make(lambda x: done.append(x), is_using_rpc_mode=True)
    long_ago = time.time() - 30  # due 29 s ago: as if no consumer ran when it was due
    missed = f.publish({"x": "missed"}, task_options=TaskOptions(countdown=1, misfire_grace_time=5,
                                                                 publish_time=long_ago))
    f.publish({"x": "in_grace"}, task_options=TaskOptions(countdown=1, misfire_grace_time=60, publish_time=long_ago))
    f.publish({"x": "no_grace"}, task_options=TaskOptions(countdown=1, publish_time=long_ago))
    f.publish({"x": "eta_missed"}, task_options=TaskOptions(eta=long_ago, misfire_grace_time=1))
    f.consume()
    wait_until(lambda: sorted(done) == ["in_grace", "no_grace"], 10)
    status = missed.wait(10)
    assert status["run_status"] == "expired" and "misfire_grace_time=5" in status["exception_msg"]
    wait_until(lambda: f.get_message_count() == 0, 5)
    assert sorted(done) == ["in_grace", "no_grace"]


def test_run_time_window_holds_messages_outside_it(make):
    import datetime as dt
    closed_minute = (dt.datetime.now().minute + 30) % 60
    done = []
    f = make(lambda x: done.append(x), allow_run_time_cron=f"{closed_minute} * * * *")
    f.push(1)
    f.consume()
    time.sleep(1.5)  # nothing may happen: assert the absence over a short window
    assert done == []
    assert f.get_message_count() == 1  # waiting, not dropped
    f.stop_consume(5)
    g = make(lambda x: done.append(x), queue_name=f.queue_name, allow_run_time_cron="* * * * *")
    g.consume()
    wait_until(lambda: done == [1], 10)


def test_retries_with_backoff(make):
    calls = []

    def flaky(x):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ValueError("boom")
        return x

    statuses = []
    f = make(flaky, max_retry_times=3, is_using_advanced_retry=True,
             advanced_retry_config={"retry_base_interval": 0.2, "retry_multiplier": 2.0, "retry_max_interval": 5},
             user_custom_record_process_info_func=statuses.append)
    f.consume()
    f.push(1)
    wait_until(lambda: statuses, 10)
    assert statuses[0].success and statuses[0].run_times == 3
    assert calls[1] - calls[0] >= 0.19 and calls[2] - calls[1] >= 0.39


def test_requeue_does_not_count_as_retry_and_is_guarded(make):
    calls = []

    def work(x):
        calls.append(x)
        if x == "once" and calls.count("once") == 1:
            raise ExceptionForRequeue("not now")
        if x == "forever":
            raise ExceptionForRequeue("never")

    f = make(work, max_retry_times=0, max_requeue_times=3)
    f.consume()
    f.push("once")
    wait_until(lambda: calls.count("once") == 2, 10)
    f.push("forever")
    dlx = f.broker.dead_letter_broker()
    [d] = fetch_until(dlx, 1, timeout=15)
    assert calls.count("forever") == 4
    from funboost.testing import body_text
    import json
    assert "max_requeue_times" in json.loads(body_text(d))["extra"]["dead_letter_reason"]
    dlx.requeue([d])


def test_a_task_dead_lettered_after_its_last_requeue_gets_its_rpc_result(make):
    """The requeue that exceeds max_requeue_times ends the task: its caller must hear it (RemoteTaskError at
    once) rather than wait for a result that never comes."""
    from funboost import RemoteTaskError
    f = make(lambda x: (_ for _ in ()).throw(ExceptionForRequeue("never")), max_retry_times=0,
             max_requeue_times=1, is_using_rpc_mode=True)
    f.consume()
    r = f.push(1)
    t0 = time.monotonic()
    with pytest.raises(RemoteTaskError) as info:
        r.get(timeout=15)
    assert time.monotonic() - t0 < 10
    assert r.status_and_result["run_status"] == "dead_lettered", r.status_and_result
    dlx = f.broker.dead_letter_broker()
    [d] = fetch_until(dlx, 1, timeout=15)
    dlx.ack([d])
    assert info.value.exception_type == "ExceptionForRequeue"


def test_dead_letter_and_replay(make):
    attempts = []

    def work(x):
        attempts.append(x)
        if x == "dlx-now":
            raise ExceptionForPushToDlxqueue("bad input")
        if len([a for a in attempts if a == "fails"]) <= 2:
            raise RuntimeError("still failing")

    f = make(work, max_retry_times=1, is_push_to_dlx_queue_when_retry_max_times=True)
    f.consume()
    f.push("dlx-now")
    f.push("fails")
    dlx = f.broker.dead_letter_broker()
    wait_until(lambda: dlx.queue_size().ready == 2 if dlx.queue_size().ready is not None else True, 10,
               message="2 dead letters")
    assert attempts.count("dlx-now") == 1 and attempts.count("fails") == 2
    moved = f.replay_dead_letters()
    assert moved == 2
    wait_until(lambda: attempts.count("fails") == 3, 10, message="replayed task ran and succeeded")


def test_rpc_result_and_error_propagation(make):
    def div(a, b):
        return a / b

    f = make(div, is_using_rpc_mode=True, max_retry_times=0)
    f.consume()
    assert f.push(6, 3).get(timeout=10) == 2
    r = f.push(1, 0)
    assert r.wait(10)["exception_type"] == "ZeroDivisionError"
    assert not r.is_success()
    from funboost import RemoteTaskError
    with pytest.raises(RemoteTaskError, match="ZeroDivisionError"):
        r.get()


def test_waiting_without_rpc_mode_raises_at_once(make):
    f = make(lambda x: x)
    r = f.push(1)
    t0 = time.monotonic()
    with pytest.raises(RpcNotEnabled):
        r.get(timeout=30)
    assert time.monotonic() - t0 < 10  # not the 30 s timeout
    # per-message RPC works without the booster setting
    f.consume()
    assert f.publish({"x": 5}, task_options=TaskOptions(is_using_rpc_mode=True)).get(timeout=10) == 5


def test_publish_argument_checks_and_caller_dict_untouched(make):
    from funboost import PublishArgumentsError
    f = make(lambda a, b=1: a)
    with pytest.raises(PublishArgumentsError, match="missing"):
        f.publish({"b": 2})
    with pytest.raises(PublishArgumentsError, match="unknown"):
        f.publish({"a": 1, "c": 2})
    with pytest.raises(PublishArgumentsError):
        f.push(1, 2, 3)
    if not f.broker_cls.accepts_payload:  # in-process brokers carry any object, as in the original
        with pytest.raises(PublishArgumentsError, match="JSON"):
            f.push(object())
    msg = {"a": 1}
    f.publish(msg)
    f.publish(msg)
    assert msg == {"a": 1}


def test_pause_and_resume(make):
    done = []
    f = make(lambda x: done.append(x))
    f.consume()
    f.push(1)
    wait_until(lambda: done == [1], 10)
    f.pause()
    wait_until(lambda: f.consumer.paused, 3, message="paused within 2 s")
    f.push(2)
    time.sleep(1.0)
    assert done == [1]
    f.resume()
    wait_until(lambda: done == [1, 2], 5)


@pytest.mark.skipif(GREEN, reason="stopping a running greenlet remotely is not supported; queued kills are")
def test_remote_kill_of_queued_and_running_tasks(make):
    started, finished = [], []

    def work(x):
        started.append(x)
        time.sleep(20 if x == "long" else 0)
        finished.append(x)

    statuses = []
    f = make(work, is_support_remote_kill_task=True, max_retry_times=0, concurrent_num=2,
             user_custom_record_process_info_func=statuses.append)
    queued = f.push("queued")
    f.kill_task(queued.task_id)
    f.consume()
    running = f.push("long")
    wait_until(lambda: "long" in started, 10)
    f.kill_task(running.task_id)
    wait_until(lambda: len(statuses) == 2, 10, message="both settled")
    assert "queued" not in started
    assert "long" not in finished
    assert {s.run_status for s in statuses} == {"killed"}


def test_status_records_are_saved_and_queryable(make):
    f = make(lambda x: 10 / x, max_retry_times=0,
             function_result_status_persistence_conf={"is_save_status": True, "is_save_result": True})
    f.consume()
    ok = f.push(5)
    bad = f.push(0)
    wait_until(lambda: len(f.query_statuses()) == 2, 10)
    [rec] = f.query_statuses(task_id=ok.task_id)
    assert rec["success"] and rec["result"] == 2 and rec["run_times"] == 1
    [rec] = f.query_statuses(success=False)
    assert rec["task_id"] == bad.task_id and rec["exception_type"] == "ZeroDivisionError"
    assert rec["host"] and rec["pid"] == os.getpid()


def test_a_result_json_cannot_hold_loses_no_record_and_reaches_its_caller(make):
    """A result with a tuple as a dict key made the whole batch of status records fail to encode (every
    record of the batch lost) and its RPC caller wait out the timeout."""
    f = make(lambda x: {(1, 2): x} if x == 3 else x, is_using_rpc_mode=True, state_backend="sqlite",
             function_result_status_persistence_conf={"is_save_status": True, "is_save_result": True})
    f.consume()
    rs = [f.push(i) for i in range(6)]
    assert rs[3].get(timeout=20) == {"(1, 2)": 3}  # the key as its repr, as other values JSON cannot hold
    assert [r.get(timeout=20) for r in rs[:3] + rs[4:]] == [0, 1, 2, 4, 5]
    wait_until(lambda: len(f.query_statuses()) == 6, 10, message="all 6 status records saved")


class Calculator:
    def __init__(self, base):
        self.obj_init_params = {"base": base}
        self.base = base

    @boost(BoosterParams(queue_name="calc_add_method", broker_kind="memory", state_backend="memory",
                         is_using_rpc_mode=True, log_to_console=False))
    def add(self, x):
        return self.base + x

    @classmethod
    def cm(cls, x):
        return f"{cls.__name__}:{x}"

    @staticmethod
    @boost(BoosterParams(queue_name="calc_static_method", broker_kind="memory", state_backend="memory",
                         is_using_rpc_mode=True, log_to_console=False))
    def sm(x):
        return x * 3


class WithClassMethod:
    # @classmethod above @boost, the order users write most: C.method.push(C, x) is the documented form
    @classmethod
    @boost(BoosterParams(queue_name="calc_class_method_above", broker_kind="memory", state_backend="memory",
                         is_using_rpc_mode=True, log_to_console=False))
    def cm(cls, x):
        return f"{cls.__name__}:{x}"


Calculator.cm_task = boost(BoosterParams(queue_name="calc_class_method", broker_kind="memory",
                                         state_backend="memory", is_using_rpc_mode=True,
                                         log_to_console=False))(Calculator.__dict__["cm"])


def test_methods_as_tasks():
    c = Calculator(100)
    assert c.add(1) == 101
    Calculator.add.consume()
    Calculator.sm.consume()
    Calculator.cm_task.consume()
    try:
        assert c.add.push(5).get(timeout=10) == 105
        assert Calculator.add.push(Calculator(1), 2).get(timeout=10) == 3
        assert Calculator.sm.push(4).get(timeout=10) == 12
        assert Calculator.cm_task.push(Calculator, 7).get(timeout=10) == "Calculator:7"
        WithClassMethod.cm.consume()
        assert WithClassMethod.cm.push(WithClassMethod, 8).get(timeout=10) == "WithClassMethod:8"
        from funboost import PublishArgumentsError

        class NoInit:
            pass
        with pytest.raises(PublishArgumentsError, match="obj_init_params"):
            Calculator.add.push(NoInit(), 1)
    finally:
        for b in (Calculator.add, Calculator.sm, Calculator.cm_task, WithClassMethod.cm):
            b.stop_consume(5)
