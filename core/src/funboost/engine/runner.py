"""The runner: runs one task to its final outcome (retries, timeout, requeue / dead-letter exceptions)
and reports the outcome (ack, RPC result, status record, stats, hooks) through the consumer."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from funboost.context import FctContext, reset_current_task, set_current_task
from funboost.engine.controls import KillableCall, backoff_delay
from funboost.enums import RunStatus
from funboost.exceptions import (ExceptionForPushToDlxqueue, ExceptionForRequeue, FunctionTimeoutError,
                                 TaskKilled)
from funboost.message import DecodedMessage
from funboost.plugins.broker import Delivery
from funboost.records import FunctionResultStatus

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.consumer import Consumer


class Task:
    """One message on its way through the engine (one per message, so a slotted class)."""

    __slots__ = ("delivery", "msg", "kwargs", "filter_key", "filter_claimed")

    def __init__(self, delivery: Delivery, msg: DecodedMessage, kwargs: Optional[dict] = None,
                 filter_key: Optional[str] = None) -> None:
        self.delivery = delivery
        self.msg = msg
        self.kwargs: dict = kwargs if kwargs is not None else {}  # arguments as the function receives them
        self.filter_key = filter_key  # dedup key, computed once when filtering is on
        self.filter_claimed = False  # this task holds the "running" claim of its filter key

    @property
    def task_id(self) -> str:
        return self.msg.extra["task_id"]


_FINISH = RunStatus.FINISH  # a module name: RunStatus.FINISH goes through the enum's metaclass per task

_thread_loops = threading.local()


def _run_coroutine_in_thread(coro: Any) -> Any:
    """A coroutine function in threading mode runs on a loop owned by the worker thread."""
    loop = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


class Runner:
    """Runs tasks of one queue for its consumer (which settles each outcome in ``finish_task``)."""

    def __init__(self, consumer: "Consumer") -> None:
        self.consumer = consumer
        p = consumer.params
        self.params = p
        self.func = consumer.setup.func
        self.is_coroutine = consumer.setup.is_coroutine
        self.logger = consumer.logger
        self._plain_call: Optional[bool] = None  # decided at the first call (the consumer sets its hooks first)
        # the attempt options of a message without per-message options: worked out once, not per message
        self.queue_options = _attempt_options({}, p)

    # ---------------------------------------------------------------- helpers
    def new_status(self, task: Task) -> FunctionResultStatus:
        return FunctionResultStatus(queue_name=self.params.queue_name, task_id=task.task_id,
                                    params=task.msg.kwargs, publish_time=task.msg.extra.get("publish_time"))

    def _log_failure(self, task: Task, attempt: int, max_attempts: int, exc: BaseException, detail: bool) -> None:
        kind = "timed out" if isinstance(exc, FunctionTimeoutError) else "failed"
        self.logger.error("task %s %s on attempt %d/%d: %s: %s", task.task_id, kind, attempt, max_attempts,
                          type(exc).__name__, exc, exc_info=exc if detail else None,
                          extra={"task_id": task.task_id})

    def _retry_sleep(self, attempt: int) -> float:
        if not self.params.is_using_advanced_retry:
            return 0.0
        cfg = self.params.advanced_retry_config
        return backoff_delay(attempt, cfg.retry_base_interval, cfg.retry_multiplier, cfg.retry_max_interval,
                             cfg.retry_jitter)

    def _killed_check(self, task_id: str):
        def check() -> Optional[BaseException]:
            if task_id in self.consumer.kill_set:
                return TaskKilled(f"task {task_id} was killed remotely")
            return None
        return check

    # ---------------------------------------------------------------- sync path
    def run(self, task: Task) -> FunctionResultStatus:
        a = _Attempts(self, task)
        token = set_current_task(a)
        try:
            while True:
                a.begin()
                try:
                    if self._plain_call and not a.timeout:  # the common case, without _call_sync's checks
                        a.succeeded(self.func(**task.kwargs))
                    else:
                        a.succeeded(self._call_sync(task, a.timeout))
                    break
                except Exception as exc:  # noqa: BLE001 - classified by _Attempts.failed
                    delay = a.failed(exc)
                    if delay is None:
                        break
                    if delay:
                        time.sleep(delay)
        finally:
            reset_current_task(token)
        self.consumer.finish_task(task, a.status, a.outcome, retry_delay=a.retry_delay)
        return a.status

    def _call_sync(self, task: Task, timeout: Optional[float]) -> Any:
        plain = self._plain_call
        if plain is None:
            plain = self._plain_call = (not self.params.is_support_remote_kill_task and self.consumer.execute_hook is None
                                        and not self.is_coroutine)
        if plain and not timeout:  # the common case: call the function, nothing around it
            return self.func(**task.kwargs)
        kill = self.params.is_support_remote_kill_task
        mode = self.params.concurrent_mode
        if timeout and mode in ("gevent", "eventlet"):
            return self._call_green_timeout(task, timeout, mode)
        if timeout or kill:
            call = KillableCall(lambda: self._invoke(task), name=f"funboost-{self.params.queue_name}-call")
            return call.run(timeout, self._killed_check(task.task_id) if kill else None)
        return self._invoke(task)

    def _call_green_timeout(self, task: Task, timeout: float, mode: str) -> Any:
        """Greenlets cannot be stopped with a thread exception; their own Timeout interrupts the
        greenlet at its next cooperative switch (I/O, sleep)."""
        err = FunctionTimeoutError(f"function ran longer than function_timeout={timeout}s and was stopped")
        if mode == "gevent":
            import gevent
            with gevent.Timeout(timeout, err):
                return self._invoke(task)
        import eventlet
        with eventlet.Timeout(timeout, err):
            return self._invoke(task)

    def _invoke(self, task: Task) -> Any:
        if self.consumer.execute_hook is not None:
            return self.consumer.execute_hook(queue_name=self.params.queue_name, task=task,
                                       call=lambda: self._invoke_plain(task))
        return self._invoke_plain(task)

    def _invoke_plain(self, task: Task) -> Any:
        result = self.func(**task.kwargs)
        if self.is_coroutine:
            result = _run_coroutine_in_thread(result)
        return result

    # ---------------------------------------------------------------- asyncio path
    async def run_async(self, task: Task) -> FunctionResultStatus:
        a = _Attempts(self, task)
        token = set_current_task(a)
        try:
            while True:
                a.begin()
                try:
                    if self.consumer.execute_context_hook is None:
                        a.succeeded(await self._call_async(task, a.timeout))
                    else:
                        a.succeeded(await self._call_async_in_plugin_contexts(task, a.timeout))
                    break
                except Exception as exc:  # noqa: BLE001 - classified by _Attempts.failed
                    delay = a.failed(exc)
                    if delay is None:
                        break
                    if delay:
                        await asyncio.sleep(delay)
        finally:
            reset_current_task(token)
        if self.consumer.finish_is_cheap(task, a.outcome):
            self.consumer.finish_task(task, a.status, a.outcome)  # only a buffered ack: no I/O on the loop
        else:  # state writes, republish, callbacks may block: keep them off the loop
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.consumer.finish_task(task, a.status, a.outcome, retry_delay=a.retry_delay))
        return a.status

    async def _call_async_in_plugin_contexts(self, task: Task, timeout: Optional[float]) -> Any:
        hook = self.consumer.execute_context_hook
        assert hook is not None
        with contextlib.ExitStack() as stack:
            for cm in hook(queue_name=self.params.queue_name, task=task):
                if cm is not None:
                    stack.enter_context(cm)
            return await self._call_async(task, timeout)

    async def _call_async(self, task: Task, timeout: Optional[float]) -> Any:
        coro = self.func(**task.kwargs)
        if not asyncio.iscoroutine(coro):
            return coro  # a sync function in async mode ran inline
        if not timeout:
            return await coro
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise FunctionTimeoutError(
                f"coroutine ran longer than function_timeout={timeout}s and was cancelled") from None


def _attempt_options(extra: dict, p: Any) -> tuple:
    """(max_retry, timeout, detail, max_attempts, base) for a message: its own options, else the queue's."""
    max_retry = extra.get("max_retry_times")
    max_retry = p.max_retry_times if max_retry is None else int(max_retry)
    detail = extra.get("is_print_detail_exception")
    return (max_retry, extra.get("function_timeout", p.function_timeout),
            p.is_print_detail_exception if detail is None else bool(detail), 1 + max(0, max_retry),
            int(extra.get("_advanced_retry_count", 0)))


class _Attempts(FctContext):
    """One task's attempts, shared by the sync and asyncio paths: options, status, and the decision after
    each failure (retry now, retry after a backoff, or stop with an outcome). It is also the task's
    ``fct`` context (one object per task instead of two)."""

    __slots__ = ("runner", "task", "max_retry", "timeout", "detail", "status", "max_attempts", "base", "outcome",
                 "tries", "retry_delay")

    def __init__(self, runner: Runner, task: Task) -> None:
        msg = task.msg
        extra = msg.extra
        p = runner.params
        self.runner = runner
        self.task = task
        self.max_retry, self.timeout, self.detail, self.max_attempts, self.base = (
            _attempt_options(extra, p) if task.msg.has_options else runner.queue_options)
        task_id = extra["task_id"]
        self.status = st = FunctionResultStatus(p.queue_name, task_id, msg.kwargs, extra.get("publish_time"))
        self.tries = 0  # attempts in this delivery; ``attempt`` (fct.attempt) also counts earlier deliveries
        self.outcome = _FINISH
        self.retry_delay = 0.0  # seconds until a RETRY_LATER copy is due (engine data, not user_context)
        # the FctContext fields
        self.attempt = self.base
        self.queue_name = p.queue_name
        self.task_id = task_id
        self.function_params = msg.kwargs
        self.full_msg = msg.full
        self.logger = runner.logger
        self.function_result_status = st

    @property
    def ctx(self) -> "_Attempts":
        return self

    def begin(self) -> None:
        self.tries += 1
        self.attempt = self.status.run_times = self.tries + self.base

    def succeeded(self, result: Any) -> None:
        st = self.status
        st._result, st.success = result, True  # _result: the field behind the ``result`` property
        if st.exception_type is not None:  # an earlier attempt failed
            st.exception = st.exception_type = st.exception_msg = None
            st.timed_out = False

    def failed(self, exc: BaseException) -> Optional[float]:
        """None: stop (``self.outcome`` says how). A number: retry after that many seconds."""
        st = self.status
        st.set_error(exc)
        if isinstance(exc, ExceptionForRequeue):
            self.outcome = RunStatus.REQUEUED
            return None
        if isinstance(exc, ExceptionForPushToDlxqueue):
            self.outcome = RunStatus.DEAD_LETTERED
            return None
        if isinstance(exc, TaskKilled):
            self.outcome = RunStatus.KILLED
            return None
        r = self.runner
        st.timed_out = isinstance(exc, FunctionTimeoutError)
        r.consumer.on_attempt_error(st, exc)
        r._log_failure(self.task, self.attempt, self.max_attempts, exc, self.detail)
        if self.attempt >= self.max_attempts:  # (attempts of earlier deliveries count: requeue retry mode)
            if r.params.is_push_to_dlx_queue_when_retry_max_times:
                self.outcome = RunStatus.DEAD_LETTERED
                where = f"moved to the dead-letter queue {r.params.queue_name}_dlx"
            else:
                where = "dropped (is_push_to_dlx_queue_when_retry_max_times=False; its status record keeps the error)"
            r.logger.error("task %s failed all %d attempts: %s", self.task_id, self.max_attempts, where,
                           extra={"task_id": self.task_id})
            return None
        delay = r._retry_sleep(self.attempt)
        if delay and r.params.advanced_retry_config.retry_mode == "requeue":
            self.outcome = RunStatus.RETRY_LATER  # republished with a countdown; the worker is freed meanwhile
            self.retry_delay = delay
            return None
        return delay
