"""Fixtures: huey on the real Redis of this machine (db 14 by default) and on SQLite files, unique queues."""
from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from funboost.testing import require_available
from funboost.testing.frameworks import drop_with_dead_letter, registered_cleanup, unique_queue_name
from funboost.testing.fixtures import consumers  # noqa: F401 - a fixture of these tests
from funboost_huey import HueyBroker, HueyOptions

REDIS_URL = os.environ.get("FUNBOOST_HUEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def check_redis() -> None:
    require_available(HueyBroker, HueyOptions(redis_url=REDIS_URL))


@pytest.fixture
def queue_name() -> str:
    # huey keeps only [A-Za-z0-9_] of a queue name in its keys
    return unique_queue_name("fbhuey")


@pytest.fixture(params=["redis", "sqlite"])
def cfg(request, tmp_path) -> dict:
    """broker_exclusive_config for each storage."""
    if request.param == "redis":
        check_redis()
        return {"redis_url": REDIS_URL}
    return {"storage": "sqlite", "sqlite_filename": str(tmp_path / "huey.db")}


@pytest.fixture
def redis_cfg() -> dict:
    check_redis()
    return {"redis_url": REDIS_URL}


@pytest.fixture
def cleanup() -> Iterator[Callable[[str, dict], None]]:
    """Register (queue, cfg) pairs whose queues (and dead-letter queues) are purged after the test."""
    yield from registered_cleanup(purge_queues)


def purge_queues(queue: str, cfg: dict) -> None:
    """Purge ``queue`` and its dead-letter queue (tests only)."""
    drop_with_dead_letter(queue, lambda name: HueyBroker(name, HueyOptions(**cfg)), HueyBroker.purge,
                          ignore_errors=False)
