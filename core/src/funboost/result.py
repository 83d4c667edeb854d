"""AsyncResult: the handle push/publish return, to wait for a task's result (RPC mode)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Optional, TypeVar

from funboost.enums import RunStatus
from funboost.exceptions import RpcNotEnabled, RpcTimeout

if TYPE_CHECKING:  # pragma: no cover
    from funboost.booster import Booster

R = TypeVar("R")  # the task function's return type

_callback_pool: Optional[ThreadPoolExecutor] = None
_callback_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _callback_pool
    with _callback_lock:
        if _callback_pool is None:
            _callback_pool = ThreadPoolExecutor(max_workers=20, thread_name_prefix="funboost-rpc-callback")
        return _callback_pool


class AsyncResult(Generic[R]):
    """Lazy: nothing touches the state backend until a result is asked for. ``AsyncResult[R]``: ``R`` is
    the task function's return type (what ``get()`` returns)."""

    def __init__(self, task_id: str, booster: Optional["Booster[Any, R]"] = None, rpc_enabled: bool = True,
                 timeout: Optional[float] = None, state: Any = None) -> None:
        self.task_id = task_id
        self.booster = booster
        self.rpc_enabled = rpc_enabled
        self.timeout = timeout if timeout is not None else (booster.params.rpc_timeout if booster else 1800)
        self._state = state
        self._data: Optional[dict] = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_id}>"

    def __str__(self) -> str:
        return self.task_id

    def _backend(self):
        if self._state is None:
            self._state = self.booster.state_backend() if self.booster else None
            if self._state is None:
                from funboost.state.base import get_state_backend
                self._state = get_state_backend()
        return self._state

    def set_timeout(self, timeout: float) -> "AsyncResult[R]":
        self.timeout = timeout
        return self

    def _check_enabled(self) -> None:
        if not self.rpc_enabled:
            q = self.booster.queue_name if self.booster else "?"
            raise RpcNotEnabled(
                f"task {self.task_id} of queue {q!r} was published without RPC mode, so no result will ever be "
                f"written. Set BoosterParams(is_using_rpc_mode=True) or TaskOptions(is_using_rpc_mode=True).")

    def wait(self, timeout: Optional[float] = None) -> dict:
        """The full status record (dict); raises RpcTimeout when it does not arrive in time."""
        if self._data is not None:
            return self._data
        self._check_enabled()
        t = self.timeout if timeout is None else timeout
        data = self._backend().wait_result(self.task_id, t)
        if data is None:
            raise RpcTimeout(f"no result for task {self.task_id} within {t}s")
        self._data = data
        return data

    @property
    def status_and_result(self) -> dict:
        return self.wait()

    @property
    def rpc_data(self) -> dict:
        return self.wait()

    @property
    def result(self) -> R:
        return self.wait()["result"]  # type: ignore[no-any-return]

    def get(self, timeout: Optional[float] = None, propagate: bool = True) -> R:
        """The function's return value; with ``propagate`` a failed task raises RemoteTaskError."""
        data = self.wait(timeout)
        if propagate and not data.get("success") and data.get("run_status") != RunStatus.FILTERED:
            raise RemoteTaskError(data)
        return data.get("result")  # type: ignore[no-any-return]

    def is_success(self) -> bool:
        return bool(self.wait().get("success"))

    def is_pending(self) -> bool:
        self._check_enabled()
        return self._data is None and self._backend().get_result(self.task_id) is None

    def set_callback(self, callback: Callable[[dict], Any]) -> None:
        """Call ``callback(status_dict)`` in a background thread once the result arrives."""
        self._check_enabled()
        _pool().submit(lambda: callback(self.wait()))

    async def aget(self, timeout: Optional[float] = None) -> R:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.get(timeout))

    async def await_status_and_result(self, timeout: Optional[float] = None) -> dict:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.wait(timeout))

    @staticmethod
    def batch_wait(results: Iterable["AsyncResult[Any]"], timeout: Optional[float] = None) -> list[dict]:
        """Wait for all; returns their status records in the same order."""
        return [r.wait(timeout) for r in results]


class RemoteTaskError(Exception):
    """The task failed in the consumer; carries its status record."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.exception_type = data.get("exception_type")
        self.exception_msg = data.get("exception_msg")
        super().__init__(f"task {data.get('task_id')} failed: {self.exception_type}: {self.exception_msg}")


AioAsyncResult = AsyncResult
