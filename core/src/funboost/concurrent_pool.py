"""The original's ``funboost.concurrent_pool`` module path: its pool classes as this project's executors,
for ``BoosterParams(specify_concurrent_pool=...)`` (one pool shared by several boosters). The executors
run the engine's tasks (``submit(fn, *args)``); they are not general ``concurrent.futures`` executors:
for that, see :class:`funboost.MemoryFunboostPool`."""
import sys

from funboost.engine.executors import AsyncioExecutor, Executor, FlexibleThreadPool, GreenletExecutor, SoloExecutor

FunboostBaseConcurrentPool = Executor
CustomThreadPoolExecutor = FlexibleThreadPool  # the original's bounded, shrinking thread pools
BoundedThreadPoolExecutor = FlexibleThreadPool
ThreadPoolExecutorShrinkAble = FlexibleThreadPool
AsyncPoolExecutor = AsyncioExecutor
SoloExecutor = SoloExecutor

__all__ = ["FunboostBaseConcurrentPool", "FlexibleThreadPool", "CustomThreadPoolExecutor", "BoundedThreadPoolExecutor",
           "ThreadPoolExecutorShrinkAble", "AsyncPoolExecutor", "SoloExecutor", "GreenletExecutor"]

# the original's module paths below funboost.concurrent_pool (``from funboost.concurrent_pool.
# custom_threadpool_executor import ThreadPoolExecutorShrinkAble``): this module is importable under them too
for _path in ("custom_threadpool_executor", "bounded_threadpoolexcutor", "flexible_thread_pool",
              "async_pool_executor"):
    sys.modules.setdefault(f"{__name__}.{_path}", sys.modules[__name__])
