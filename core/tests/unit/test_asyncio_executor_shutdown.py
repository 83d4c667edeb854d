"""An async-mode consumer's stop must not wait out the executor's 3 s safety timeout (it did on every stop:
the loop was stopped inside the coroutine whose result the stopping thread waited for)."""
from __future__ import annotations

import asyncio
import time

from funboost.engine.executors import AsyncioExecutor


def test_shutdown_of_an_idle_asyncio_executor_is_prompt():
    ex = AsyncioExecutor(2)
    deadline = time.monotonic() + 5
    while not ex.loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    ex.shutdown(wait=False)
    took = time.monotonic() - started
    assert took < 1.5, f"shutdown took {took:.2f}s"
    deadline = time.monotonic() + 5
    while ex.loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ex.loop.is_running()


def test_shutdown_cancels_a_running_coroutine_promptly():
    ex = AsyncioExecutor(2)
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    ex.submit(forever)
    time.sleep(0.2)
    started = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - started < 1.5
    assert cancelled == [True]
