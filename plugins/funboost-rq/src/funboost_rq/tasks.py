"""``funboost_rq.tasks.<queue>``: the rq job function of each funboost queue (see :mod:`funboost_rq.job`)."""
from __future__ import annotations

from typing import Any, Callable

from funboost_rq.job import named


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):  # module protocol lookups (__path__, __wrapped__ ...) are not queues
        raise AttributeError(name)
    return named(name)
