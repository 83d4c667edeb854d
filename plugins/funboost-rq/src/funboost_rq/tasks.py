"""``funboost_rq.tasks.<queue>``: the rq job function of each funboost queue (see :mod:`funboost_rq.job`)."""
from __future__ import annotations

from typing import Any, Callable

from funboost_rq.job import named

_by_queue: dict[str, Callable[..., Any]] = {}  # rq resolves the path several times per job


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):  # module protocol lookups (__path__, __wrapped__ ...) are not queues
        raise AttributeError(name)
    task = _by_queue.get(name)
    if task is None:
        task = _by_queue.setdefault(name, named(name))
    return task
