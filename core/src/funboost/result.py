"""AsyncResult: the handle push/publish return, to wait for a task's result (RPC mode)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Iterable, Optional, TypeVar

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
        return _raise_if_failed(self.wait(timeout), propagate).get("result")  # type: ignore[return-value]

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

    def wait_rpc_data_or_raise(self, raise_exception: bool = True) -> dict:
        """The original's name: the status record; with ``raise_exception`` a failed task raises
        :class:`RemoteTaskError`."""
        return _raise_if_failed(self.wait(), raise_exception)

    @classmethod
    def batch_wait_rpc_data_or_raise(cls, r_list: Iterable["AsyncResult[Any]"],
                                     raise_exception: bool = True) -> list[dict]:
        return [r.wait_rpc_data_or_raise(raise_exception) for r in r_list]


def _raise_if_failed(data: dict, raise_exception: bool) -> dict:
    if raise_exception and not data.get("success") and data.get("run_status") != RunStatus.FILTERED:
        raise RemoteTaskError(data)
    return data


class AioAsyncResult(Generic[R]):
    """The result handle for asyncio code (the original's ``AioAsyncResult``): every accessor is awaited, and
    waiting never blocks the event loop (the wait runs in the loop's default executor).

    ``await r.result``, ``await r.status_and_result``, ``await r.get()``, ``await r.is_success()``,
    ``await r.set_callback(coro_or_function)``. Made from a task id (``AioAsyncResult(task_id)``: the result is
    read from the configured state backend), or returned by ``await f.aio_push(...)``."""

    def __init__(self, task_id: Any, timeout: Optional[float] = None, *, booster: Optional["Booster[Any, R]"] = None,
                 rpc_enabled: bool = True, state: Any = None) -> None:
        if isinstance(task_id, AsyncResult):  # wrap a sync handle (aio_push)
            self._sync: AsyncResult[R] = task_id
            if timeout is not None:
                task_id.set_timeout(timeout)
        else:
            self._sync = AsyncResult(task_id, booster, rpc_enabled, timeout, state)

    @property
    def task_id(self) -> str:
        return self._sync.task_id

    @property
    def timeout(self) -> float:
        return self._sync.timeout

    def __repr__(self) -> str:
        return f"<AioAsyncResult {self.task_id}>"

    def __str__(self) -> str:
        return self.task_id

    def set_timeout(self, timeout: float) -> "AioAsyncResult[R]":
        self._sync.set_timeout(timeout)
        return self

    async def _in_executor(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def wait(self, timeout: Optional[float] = None) -> dict:
        return await self._in_executor(lambda: self._sync.wait(timeout))

    @property
    def status_and_result(self) -> "Awaitable[dict]":
        return self.wait()

    @property
    def rpc_data(self) -> "Awaitable[dict]":
        return self.wait()

    @property
    def result(self) -> "Awaitable[R]":
        async def result() -> R:
            return (await self.wait())["result"]  # type: ignore[no-any-return]
        return result()

    async def get(self, timeout: Optional[float] = None, propagate: bool = True) -> R:
        return await self._in_executor(lambda: self._sync.get(timeout, propagate))

    async def is_success(self) -> bool:
        return bool((await self.wait()).get("success"))

    async def is_pending(self) -> bool:
        return await self._in_executor(self._sync.is_pending)

    async def set_callback(self, aio_callback_func: Callable[[dict], Any]) -> None:
        """Wait for the result, then call ``aio_callback_func(status_dict)`` (awaited when it is a coroutine
        function)."""
        out = aio_callback_func(await self.wait())
        if asyncio.iscoroutine(out):
            await out

    async def wait_rpc_data_or_raise(self, raise_exception: bool = True) -> dict:
        return _raise_if_failed(await self.wait(), raise_exception)

    @classmethod
    async def batch_wait_rpc_data_or_raise(cls, r_list: Iterable["AioAsyncResult[Any]"],
                                           raise_exception: bool = True) -> list[dict]:
        return list(await asyncio.gather(*(r.wait_rpc_data_or_raise(raise_exception) for r in r_list)))


class RemoteTaskError(Exception):
    """The task failed in the consumer; carries its status record."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.exception_type = data.get("exception_type")
        self.exception_msg = data.get("exception_msg")
        super().__init__(f"task {data.get('task_id')} failed: {self.exception_type}: {self.exception_msg}")

