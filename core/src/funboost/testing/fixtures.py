"""pytest fixtures a plugin's own tests import into their conftest.py
(``from funboost.testing.fixtures import consumers``). Not registered globally: a project with funboost
installed gets no fixture names it did not ask for."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

__all__ = ["consumers"]


@pytest.fixture
def consumers() -> Iterator[Callable[[Any], None]]:
    """``consumers(booster.consume())``: each consumer given is stopped (10 s grace) when the test ends."""
    started: list = []
    yield started.append
    for c in started:
        c.stop_consume(10)
