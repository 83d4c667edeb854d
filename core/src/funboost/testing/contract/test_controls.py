"""Through the engine: the controls a user changes on a running consumer (pause, resume, a new qps, a
killed task), the run-time window and the per-task controls (RPC result, retries, requeue, filter,
expiry, countdown) reach every kind's consumer in its default configuration, a foreign framework's
worker or a serving transport included. Each kind delivers messages its own way (fetched by the engine,
handed over by a framework's worker thread, called in by a client); the controls must hold on all of
them, because the task body always runs through funboost's runner."""
from __future__ import annotations

import datetime
import os
import threading
import time
from typing import Any

from funboost.testing.contract.base import ContractBase, wait_until
from funboost.testing.contract.test_engine import wait_for_work
from funboost.testing.requirements import requires

#: the consumer reads its queue's flags once a second (engine.consumer.FLAG_POLL_INTERVAL); a little more
FLAG_APPLIED_WITHIN = 10.0
#: how long "nothing ran" is watched for (what is asserted is an absence, so it needs a window)
QUIET_SECONDS = 1.0


def _closed_window_cron() -> str:
    """A cron expression matching one minute of the hour that is half an hour away from now."""
    return f"{(datetime.datetime.now().minute + 30) % 60} * * * *"


@requires(broadcast=False)
class ControlTests:
    def _make(self, broker_cls: Any, options_raw: Any, queue_name: str, ran: list, **params: Any) -> Any:
        from funboost import BoosterParams, boost
        lock = threading.Lock()

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=4, state_backend="memory", log_to_console=False, **params))
        def work(x: int) -> int:
            with lock:
                ran.append((x, time.monotonic()))
            return x

        return work

    def test_pause_resume_and_a_new_qps_reach_the_running_consumer(self, broker_cls, options_raw, queue_name,
                                                                   settings):
        ran: list = []
        work = self._make(broker_cls, options_raw, queue_name, ran)
        ready = settings["consumer_ready_timeout"] + 20
        try:
            work.consume()
            work.push(0)
            wait_for_work(lambda: len(ran) == 1, work.broker, ready, "the first task ran")
            consumer = work.consumer

            work.pause()
            wait_until(lambda: consumer.paused, FLAG_APPLIED_WITHIN, message="the consumer sees the pause")
            for i in range(1, 4):
                work.push(i)
            killed = work.push(99).task_id  # killed while it waits: it must never run
            work.kill_task(killed)
            wait_until(lambda: killed in consumer.kill_set, FLAG_APPLIED_WITHIN, message="the consumer sees the kill")
            time.sleep(QUIET_SECONDS)  # nothing may run while paused: an absence is watched over a window
            assert [x for x, _ in ran] == [0], f"tasks ran while the queue was paused: {ran}"

            work.set_qps(4)
            wait_until(lambda: consumer.current_qps == 4, FLAG_APPLIED_WITHIN, message="the consumer sees qps=4")
            for i in range(4, 7):
                work.push(i)
            work.resume()
            wait_for_work(lambda: len(ran) == 7, work.broker, ready + 10, "all 7 tasks ran after resume")
            # the killed one was published before 4..6, so it has been taken by now: it was dropped, not run
            wait_until(lambda: work.get_message_count() in (0, -1), ready, message="get_message_count() == 0 (or -1): the queue drained")
        finally:
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()
        assert sorted(x for x, _ in ran) == list(range(7)), f"the killed task ran, or another is missing: {ran}"
        # six starts at 4 per second cannot be closer together than 5 intervals of 0.25 s (minus the
        # limiter's one-start burst and clock granularity)
        starts = sorted(t for x, t in ran if x >= 1)
        assert starts[-1] - starts[0] >= 1.0, f"6 tasks under qps=4 started within {starts[-1] - starts[0]:.3f}s"

    def test_run_time_window_holds_tasks_outside_it(self, broker_cls, options_raw, queue_name, settings):
        ran: list = []
        work = self._make(broker_cls, options_raw, queue_name, ran, allow_run_time_cron=_closed_window_cron())
        caps = broker_cls.capabilities
        try:
            work.consume()  # a serving transport serves once consume() returned (run_consumer calls serve())
            work.push(1)
            time.sleep(QUIET_SECONDS)  # outside the window nothing may run: an absence, watched over a window
            assert ran == [], f"a task ran outside the run-time window: {ran}"
        finally:
            work.stop_consume(10)
        if not caps.persistent:
            return  # the message lived in the stopped consumer (a serving transport): nothing to come back to
        # held, not dropped: a consumer whose window is open runs it
        again = self._make(broker_cls, options_raw, queue_name, ran)
        try:
            again.consume()
            wait_for_work(lambda: len(ran) == 1, again.broker, settings["consumer_ready_timeout"] + 30,
                          "the held task ran once the window was open")
        finally:
            again.stop_consume(10)
            if caps.purge:
                again.clear()
        assert [x for x, _ in ran] == [1], (f"a task held by a closed run-time window must run once when a consumer "
                                            f"with an open window takes it; ran {[x for x, _ in ran]}")

    def test_task_controls_through_boost(self, broker_cls, options_raw, queue_name, settings):
        """Per-task controls on every kind, with one consumer: the RPC result, funboost's retries (exactly
        ``max_retry_times``, never the broker's or the framework's on top), ``ExceptionForRequeue``, the task
        filter, message expiry and a countdown that does not hold back the messages behind it; the final
        status of a filtered and of an expired message, and the status record of a failed task."""
        from funboost import BoosterParams, ExceptionForRequeue, TaskOptions, boost
        runs: list = []
        lock = threading.Lock()

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=4, state_backend="memory", log_to_console=False, is_using_rpc_mode=True,
                             max_retry_times=2, is_print_detail_exception=False,
                             function_result_status_persistence_conf={"is_save_status": True}))
        def work(x: int, mode: str = "ok") -> int:
            with lock:
                runs.append((x, mode, time.time()))
                first = sum(1 for r in runs if r[0] == x) == 1
            if mode == "fail":
                raise ValueError(f"failing on purpose ({x})")
            if mode == "requeue_once" and first:
                raise ExceptionForRequeue("not yet")
            return x * 2

        def ran(x: int) -> int:
            with lock:
                return sum(1 for r in runs if r[0] == x)

        timeout = settings["consumer_ready_timeout"] + 30
        try:
            work.consume()
            result = work.push(1).get(timeout)
            assert result == 2, f"RPC mode: push(1).get() returned {result!r}, expected the function's result 2"
            failing = work.push(2, mode="fail")
            failed = failing.wait(timeout)
            assert failed["success"] is False and failed["run_times"] == 3, (
                f"max_retry_times=2: a task that always fails must end failed after 3 runs; its status: {failed}")
            result = work.push(3, mode="requeue_once").get(timeout)
            assert result == 6, f"ExceptionForRequeue: the requeued task's second run must return 6, got {result!r}"
            assert ran(3) == 2, "ExceptionForRequeue: the task goes back and runs again"
            result = work.publish({"x": 4}, task_options=TaskOptions(do_task_filtering=True)).get(timeout)
            assert result == 8, f"do_task_filtering: the first task with these arguments must run (8), got {result!r}"
            # the same arguments: filtered
            filtered = work.publish({"x": 4}, task_options=TaskOptions(do_task_filtering=True))
            expired = work.publish({"x": 5}, task_options=TaskOptions(msg_expire_seconds=5,
                                                                       publish_time=time.time() - 60))
            published = time.time()
            late = work.publish({"x": 6}, task_options=TaskOptions(countdown=1.0))
            result = work.push(7).get(timeout)  # not held back by the delayed message before it
            assert result == 14, f"push(7).get() returned {result!r}, expected 14"
            result = late.get(timeout)
            assert result == 12, f"countdown=1.0: the delayed task returned {result!r}, expected 12"
            # the filtered and the expired message were published before 6 and 7: by now they were taken
            wait_until(lambda: work.get_message_count() in (0, -1), timeout,
                       message="get_message_count() == 0 (or -1): the queue drained")
            status = filtered.wait(timeout)
            assert status["run_status"] == "filtered", f"a filtered task's final status must be 'filtered': {status}"
            status = expired.wait(timeout)
            assert status["run_status"] == "expired", f"an expired task's final status must be 'expired': {status}"
            records = wait_until(lambda: work.query_statuses(task_id=failing.task_id), 10,
                                 message="the failed task's status record")
            assert len(records) == 1, f"a failed task (retried twice) must have one status record, got {records}"
            assert records[0]["exception_type"] == "ValueError" and records[0]["success"] is False, \
                f"the failed task's status record must say success=False, exception_type='ValueError': {records[0]}"
            assert records[0]["pid"] == os.getpid(), \
                f"the failed task's status record must name the consumer's pid {os.getpid()}: {records[0]}"
        finally:
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()
        assert ran(2) == 3, f"max_retry_times=2: 3 runs, got {ran(2)}"
        assert ran(4) == 1, "the task filter let the same arguments run twice"
        assert ran(5) == 0, "an expired message ran"
        t6 = [t for x, _, t in runs if x == 6][0]
        t7 = [t for x, _, t in runs if x == 7][0]
        assert t7 < t6 and t6 - published >= 0.95, (
            f"countdown=1.0: the delayed task must run about 1 s after publishing and after the task pushed behind "
            f"it; it ran {t6 - published:.2f}s after publishing, the one behind it at {t7 - published:.2f}s")


    @requires("request_response")
    def test_sync_call_runs_an_async_function(self, broker_cls, options_raw, queue_name, settings):
        """``sync_call`` to a consumer in ``concurrent_mode="async"``: results and remote errors as from a
        thread consumer, and calls from several threads at once."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        from funboost import BoosterParams, boost

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_mode="async", concurrent_num=8, max_retry_times=0, state_backend="memory",
                             log_to_console=False, is_print_detail_exception=False))
        async def work(x: int, sleep: float = 0.0) -> int:
            await asyncio.sleep(sleep)
            if x < 0:
                raise ValueError(f"negative {x}")
            return x * 2

        timeout = settings["consumer_ready_timeout"] + 20
        try:
            work.consume()
            result = work.sync_call(21, timeout=timeout)
            assert result == 42, f"sync_call(21) to an async function returned {result!r}, expected 42"
            try:
                work.sync_call(-1, timeout=timeout)
            except Exception as exc:  # the remote error, by its type's name and message
                assert "negative -1" in str(exc), f"sync_call: the remote error's message was lost: {exc!r}"
            else:
                raise AssertionError("a failing async function's sync_call returned")
            with ThreadPoolExecutor(8) as pool:
                got = list(pool.map(lambda i: work.sync_call(i, sleep=0.05, timeout=timeout), range(24)))
            assert got == [i * 2 for i in range(24)], f"sync_call from 8 threads: wrong results {got}"
        finally:
            work.stop_consume(10)


class TestControls(ControlTests, ContractBase):
    pass
