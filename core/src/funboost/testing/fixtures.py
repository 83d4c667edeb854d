"""pytest fixtures a plugin's own tests import into their conftest.py
(``from funboost.testing.fixtures import consumers``). Not registered globally: a project with funboost
installed gets no fixture names it did not ask for."""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest

from funboost.testing.servers import free_port

__all__ = ["consumers", "queue_name", "queue_name_fixture", "port"]


@pytest.fixture
def consumers() -> Iterator[Callable[[Any], None]]:
    """``consumers(booster.consume())``: each consumer given is stopped (10 s grace) when the test ends."""
    started: list = []
    yield started.append
    for c in started:
        c.stop_consume(10)


def queue_name_fixture(prefix: str) -> Any:
    """A ``queue_name`` fixture giving ``<prefix><10 random hex digits>`` (``queue_name =
    queue_name_fixture("test_tcp_")`` in a conftest.py): tests never share a queue, and the prefix says whose
    leftovers a queue is."""

    @pytest.fixture(name="queue_name")
    def _queue_name() -> str:
        return f"{prefix}{uuid.uuid4().hex[:10]}"

    return _queue_name


queue_name = queue_name_fixture("t_")


@pytest.fixture
def port() -> int:
    """A free TCP port on loopback (for a consumer to listen on)."""
    return free_port()
