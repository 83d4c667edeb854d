"""The runner: runs one task to its final outcome (retries, timeout, requeue / dead-letter exceptions)
and reports the outcome (ack, RPC result, status record, stats, hooks) through the consumer."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from funboost.context import FctContext, reset_current_task, set_current_task
from funboost.engine.controls import KillableCall, backoff_delay
from funboost.engine.status import FunctionResultStatus
from funboost.exceptions import (ExceptionForPushToDlxqueue, ExceptionForRequeue, FunctionTimeoutError,
                                 TaskKilled)
from funboost.message import DecodedMessage
from funboost.plugins.broker import Delivery

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.consumer import Consumer


@dataclass
class Task:
    delivery: Delivery
    msg: DecodedMessage
    kwargs: dict = field(default_factory=dict)  # arguments as the function receives them

    @property
    def task_id(self) -> str:
        return self.msg.task_id


# outcome names (also FunctionResultStatus.run_status)
FINISH, REQUEUED, DEAD_LETTERED, KILLED = "finish", "requeued", "dead_lettered", "killed"

_thread_loops = threading.local()


def _run_coroutine_in_thread(coro: Any) -> Any:
    """A coroutine function in threading mode runs on a loop owned by the worker thread."""
    loop = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


class Runner:
    def __init__(self, consumer: "Consumer") -> None:
        self.c = consumer
        p = consumer.params
        self.params = p
        self.func = consumer.booster.get_callable()
        self.is_coroutine = consumer.booster.is_coroutine
        self.logger = consumer.logger

    # ---------------------------------------------------------------- helpers
    def _options(self, task: Task) -> tuple[int, Optional[float], bool]:
        extra = task.msg.extra
        p = self.params
        max_retry = extra.get("max_retry_times")
        max_retry = p.max_retry_times if max_retry is None else int(max_retry)
        timeout = extra.get("function_timeout", p.function_timeout)
        detail = extra.get("is_print_detail_exception")
        detail = p.is_print_detail_exception if detail is None else bool(detail)
        return max_retry, timeout, detail

    def _new_status(self, task: Task) -> FunctionResultStatus:
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
            if task_id in self.c.kill_set:
                return TaskKilled(f"task {task_id} was killed remotely")
            return None
        return check

    # ---------------------------------------------------------------- sync path
    def run(self, task: Task) -> FunctionResultStatus:
        max_retry, timeout, detail = self._options(task)
        status = self._new_status(task)
        max_attempts = 1 + max(0, max_retry)
        base_attempts = int(task.msg.extra.get("_advanced_retry_count", 0))
        outcome = FINISH
        ctx = FctContext(queue_name=self.params.queue_name, task_id=task.task_id, function_params=task.msg.kwargs,
                         full_msg=task.msg.full, logger=self.logger, function_result_status=status)
        token = set_current_task(ctx)
        try:
            attempt = 0
            while True:
                attempt += 1
                ctx.attempt = attempt + base_attempts
                status.run_times = attempt + base_attempts
                try:
                    status.result = self._call_sync(task, timeout)
                    status.success = True
                    status.exception = status.exception_type = status.exception_msg = None
                    break
                except ExceptionForRequeue as exc:
                    status.set_error(exc)
                    outcome = REQUEUED
                    break
                except ExceptionForPushToDlxqueue as exc:
                    status.set_error(exc)
                    outcome = DEAD_LETTERED
                    break
                except TaskKilled as exc:
                    status.set_error(exc)
                    outcome = KILLED
                    break
                except Exception as exc:  # noqa: BLE001 - any exception counts as a failed attempt
                    status.set_error(exc)
                    status.timed_out = isinstance(exc, FunctionTimeoutError)
                    self.c.on_attempt_error(status, exc)
                    self._log_failure(task, attempt + base_attempts, max_attempts, exc, detail)
                    if attempt >= max_attempts:
                        if self.params.is_push_to_dlx_queue_when_retry_max_times:
                            outcome = DEAD_LETTERED
                        break
                    delay = self._retry_sleep(attempt + base_attempts)
                    if delay and self.params.advanced_retry_config.retry_mode == "requeue":
                        outcome = "retry_later"
                        status.user_context["retry_delay"] = delay
                        break
                    if delay:
                        time.sleep(delay)
        finally:
            reset_current_task(token)
        self.c.finish_task(task, status, outcome)
        return status

    def _call_sync(self, task: Task, timeout: Optional[float]) -> Any:
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
        if self.c.execute_hook is not None:
            return self.c.execute_hook(queue_name=self.params.queue_name, task=task,
                                       call=lambda: self._invoke_plain(task))
        return self._invoke_plain(task)

    def _invoke_plain(self, task: Task) -> Any:
        result = self.func(**task.kwargs)
        if self.is_coroutine:
            result = _run_coroutine_in_thread(result)
        return result

    # ---------------------------------------------------------------- asyncio path
    async def run_async(self, task: Task) -> FunctionResultStatus:
        max_retry, timeout, detail = self._options(task)
        status = self._new_status(task)
        max_attempts = 1 + max(0, max_retry)
        base_attempts = int(task.msg.extra.get("_advanced_retry_count", 0))
        outcome = FINISH
        ctx = FctContext(queue_name=self.params.queue_name, task_id=task.task_id, function_params=task.msg.kwargs,
                         full_msg=task.msg.full, logger=self.logger, function_result_status=status)
        token = set_current_task(ctx)
        try:
            attempt = 0
            while True:
                attempt += 1
                ctx.attempt = attempt + base_attempts
                status.run_times = attempt + base_attempts
                try:
                    coro = self.func(**task.kwargs)
                    if not asyncio.iscoroutine(coro):
                        status.result = coro  # a sync function in async mode ran inline
                    elif timeout:
                        try:
                            status.result = await asyncio.wait_for(coro, timeout)
                        except asyncio.TimeoutError:
                            raise FunctionTimeoutError(
                                f"coroutine ran longer than function_timeout={timeout}s and was cancelled") from None
                    else:
                        status.result = await coro
                    status.success = True
                    status.exception = status.exception_type = status.exception_msg = None
                    break
                except ExceptionForRequeue as exc:
                    status.set_error(exc)
                    outcome = REQUEUED
                    break
                except ExceptionForPushToDlxqueue as exc:
                    status.set_error(exc)
                    outcome = DEAD_LETTERED
                    break
                except Exception as exc:  # noqa: BLE001
                    status.set_error(exc)
                    status.timed_out = isinstance(exc, FunctionTimeoutError)
                    self.c.on_attempt_error(status, exc)
                    self._log_failure(task, attempt + base_attempts, max_attempts, exc, detail)
                    if attempt >= max_attempts:
                        if self.params.is_push_to_dlx_queue_when_retry_max_times:
                            outcome = DEAD_LETTERED
                        break
                    delay = self._retry_sleep(attempt + base_attempts)
                    if delay and self.params.advanced_retry_config.retry_mode == "requeue":
                        outcome = "retry_later"
                        status.user_context["retry_delay"] = delay
                        break
                    if delay:
                        await asyncio.sleep(delay)
        finally:
            reset_current_task(token)
        # ack / state writes are blocking I/O: keep them off the loop
        await asyncio.get_running_loop().run_in_executor(None, self.c.finish_task, task, status, outcome)
        return status


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
