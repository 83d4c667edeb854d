"""Executor-style pools on funboost queues (the original's ``MemoryFunboostPool`` / ``FunboostPool`` /
``FunboostPoolPickleFunc``): ``pool.submit(fn, *args, **kwargs)`` returns a ``concurrent.futures.Future``,
so code written for ``ThreadPoolExecutor`` switches by changing one line.

* :class:`MemoryFunboostPool` runs the functions in this process on a memory queue (any function, any
  argument object; no retries, as a thread pool).
* :class:`FunboostPool` publishes ``(function path, args, kwargs)`` as JSON to any broker; consumers (the
  same pool created in the worker process) import the function by its path and run it. A consumer runs only
  functions of the project's own code (modules outside the standard library and site-packages) or of
  ``allowed_modules``: a message must not be able to make a worker call ``os.system``.
* :class:`FunboostPoolPickleFunc` is accepted for the original's code; functions are never pickled onto the
  wire here (unpickling a message would run whatever its sender chose), so it sends function paths like
  :class:`FunboostPool` (one-time notice) except on the memory broker, which passes the function itself.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import threading
import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

from funboost.booster import Booster
from funboost.params import BoosterParams

__all__ = ["MemoryFunboostPool", "FunboostPool", "FunboostPoolPickleFunc", "FunboostFuture",
           "FunboostTaskExecutionError"]


class FunboostTaskExecutionError(Exception):
    """A submitted function raised in the consumer; ``exception_type`` / ``exception_msg`` say what."""

    def __init__(self, exception_type: Optional[str], exception_msg: Optional[str]) -> None:
        self.exception_type = exception_type or "UnknownError"
        self.exception_msg = exception_msg
        super().__init__(f"{self.exception_type}: {exception_msg}")


def _call(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict) -> Any:
    out = fn(*args, **kwargs)
    if inspect.isawaitable(out):  # an async function: run it to completion in this worker thread
        return asyncio.run(_await(out))
    return out


async def _await(aw: Any) -> Any:
    return await aw


class FunboostFuture(concurrent.futures.Future):
    """A Future whose outcome is fetched when first asked for (``result()`` / ``exception()``): a task
    whose result nobody reads costs no state-backend round trip. With ``direct_result`` the value is the
    function's return value (failures raise :class:`FunboostTaskExecutionError`), else the task's
    FunctionResultStatus (dict for brokers other than memory)."""

    def __init__(self, fetch: Optional[Callable[[Optional[float]], Any]], direct_result: bool = True) -> None:
        super().__init__()
        self._fetch = fetch
        self._direct = direct_result
        self._resolve_lock = threading.Lock()

    def _settle(self, status: Any) -> None:
        if not self._direct:
            self.set_result(status)
            return
        get = status.get if isinstance(status, dict) else lambda k: getattr(status, k, None)
        if get("success"):
            self.set_result(get("result"))
        else:
            self.set_exception(FunboostTaskExecutionError(get("exception_type"), get("exception_msg")))

    def _resolve(self, timeout: Optional[float]) -> None:
        if self.done():
            return
        if self._fetch is None:
            raise RuntimeError("this pool was created with is_need_result=False: no result is kept")
        with self._resolve_lock:
            if self.done():
                return
            try:
                status = self._fetch(timeout)
            except concurrent.futures.TimeoutError:
                raise  # still running: a later call may wait longer
            except Exception as exc:  # noqa: BLE001 - the future carries it
                self.set_exception(exc)
                return
            self._settle(status)

    def result(self, timeout: Optional[float] = None) -> Any:
        self._resolve(timeout)
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        self._resolve(timeout)
        return super().exception(timeout)


class MemoryFunboostPool:
    """``submit`` any function to run in this process through a memory queue (no retries)."""

    def __init__(self, concurrent_num: int = 4, *, qps: Optional[float] = None,
                 is_future_direct_ret_result: bool = True, is_auto_start_consuming_message: bool = True) -> None:
        self.concurrent_num = concurrent_num
        self.qps = qps
        self.is_future_direct_ret_result = is_future_direct_ret_result
        self.booster_params = BoosterParams(queue_name=f"universal_pool_{id(self)}", broker_kind="memory",
                                            concurrent_num=concurrent_num, qps=qps, max_retry_times=0,
                                            should_check_publish_func_params=True, log_to_console=False)
        self.booster = self._make_booster()
        if is_auto_start_consuming_message:
            self.booster.consume()

    def _make_booster(self) -> Booster:
        def run_submitted(func: Any, args: list, kwargs: dict) -> Any:
            return _call(func, args, kwargs)
        return Booster(self.booster_params, run_submitted)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        raw = self.booster.get_future(fn, list(args), kwargs)
        fut = FunboostFuture(lambda timeout: raw.result(timeout), self.is_future_direct_ret_result)
        return fut

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None) -> Iterable[Any]:
        futures = [self.submit(fn, *a) for a in zip(*iterables)]
        return (f.result(timeout) for f in futures)

    def shutdown(self, wait: bool = True) -> None:
        self.booster.stop_consume(None if wait else 0.0)

    def __enter__(self) -> "MemoryFunboostPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _function_path(fn: Callable[..., Any]) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise TypeError(f"{fn!r} has no import path (a lambda or a nested function): FunboostPool sends the "
                        f"function's module and name; define it at module level")
    if module == "__main__":
        import __main__
        spec = getattr(__main__, "__spec__", None)
        if spec is None:
            raise TypeError(f"{qualname} is defined in a script run as __main__: consumers cannot import it; "
                            f"put it in a module")
        module = spec.name
    return f"{module}:{qualname}"


_LIBRARY_DIRS = tuple({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                       if k in ("stdlib", "platstdlib", "purelib", "platlib") and p})


def _name_allowed(name: str, allowed_modules: Sequence[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in allowed_modules)


def _allowed(module: Any, allowed_modules: Optional[Sequence[str]]) -> bool:
    name = module.__name__
    if allowed_modules is not None:
        return _name_allowed(name, allowed_modules)
    path = getattr(module, "__file__", None)
    if not path:  # builtins and frozen modules
        return False
    return not os.path.realpath(path).startswith(_LIBRARY_DIRS)


class FunboostPoolPickleFunc(MemoryFunboostPool):
    """A pool on any broker (``booster_params``). ``is_need_result`` turns RPC mode on so futures get
    results; without it ``result()`` raises. ``allowed_modules``: dotted module prefixes whose functions
    consumers may run (default: the project's own modules, i.e. not the standard library or site-packages)."""

    _notice_given = False

    def __init__(self, booster_params: BoosterParams, *, is_need_result: bool = False,
                 is_future_direct_ret_result: bool = True, is_auto_start_consuming_message: bool = True,
                 allowed_modules: Optional[Sequence[str]] = None) -> None:
        self.booster_params = booster_params
        self.is_need_result = is_need_result
        self.is_future_direct_ret_result = is_future_direct_ret_result
        self.allowed_modules = list(allowed_modules) if allowed_modules is not None else None
        self._memory = booster_params.broker_kind in ("memory", "MEMORY_QUEUE", "memory_queue")
        if not self._memory:
            updates: dict[str, Any] = {"should_check_publish_func_params": True}
            if is_need_result:
                updates["is_using_rpc_mode"] = True
            self.booster_params = booster_params.model_copy(update=updates)
            self._notice_pickle()
        self.booster = self._make_booster()
        if is_auto_start_consuming_message:
            self.booster.consume()

    def _notice_pickle(self) -> None:
        if type(self) is FunboostPoolPickleFunc and not FunboostPoolPickleFunc._notice_given:
            FunboostPoolPickleFunc._notice_given = True
            warnings.warn("FunboostPoolPickleFunc: functions are sent by import path, never pickled (a pickled "
                          "message would run code its sender chose); define submitted functions at module level",
                          stacklevel=3)

    def _make_booster(self) -> Booster:
        if self._memory:
            return super()._make_booster()
        allowed = self.allowed_modules

        def run_submitted(func_path: str, args: list, kwargs: dict) -> Any:
            module_name, _, qualname = str(func_path).partition(":")

            def refuse() -> PermissionError:
                return PermissionError(f"{func_path}: this pool runs only the project's own functions "
                                       f"(allowed_modules={allowed})")
            if allowed is not None and not _name_allowed(module_name, allowed):
                raise refuse()  # checked before the import: a message must not import what it likes either
            if allowed is None and module_name not in sys.modules:
                # the default rule (not a library) judged from where the module would load, before importing
                try:
                    spec = importlib.util.find_spec(module_name)
                except (ImportError, ValueError):
                    spec = None
                origin = getattr(spec, "origin", None)
                if not origin or not os.path.exists(origin) or os.path.realpath(origin).startswith(_LIBRARY_DIRS):
                    raise refuse()
            module = importlib.import_module(module_name)
            if not _allowed(module, allowed):
                raise refuse()
            fn: Any = module
            for part in qualname.split("."):
                # no dunders, and never through another module: "tasks:os.system" reaches os.system through
                # a project module that imports os
                if not part or part.startswith("__"):
                    raise refuse()
                fn = getattr(fn, part)
                if inspect.ismodule(fn):
                    raise refuse()
            # the function itself must be defined in an allowed module ("tasks:system" after
            # "from os import system" in tasks is os.system)
            owner = sys.modules.get(getattr(fn, "__module__", None) or "")
            if owner is None or not _allowed(owner, allowed):
                raise refuse()
            return _call(fn, args, kwargs)
        return Booster(self.booster_params, run_submitted)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._memory:
            return super().submit(fn, *args, **kwargs)
        r = self.booster.push(_function_path(fn), list(args), kwargs)
        if not self.is_need_result:
            return FunboostFuture(None)

        def fetch(timeout: Optional[float]) -> dict:
            from funboost.exceptions import RpcTimeout
            try:
                return r.wait(timeout)
            except RpcTimeout as exc:  # still running, as Future.result(timeout) reports it
                raise concurrent.futures.TimeoutError(str(exc)) from None
        return FunboostFuture(fetch, self.is_future_direct_ret_result)


class FunboostPool(FunboostPoolPickleFunc):
    """:class:`FunboostPoolPickleFunc` without the notice: functions travel as ``module:qualname``."""
