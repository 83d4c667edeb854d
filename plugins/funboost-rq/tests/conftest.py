"""Fixtures: rq on the real Redis of this machine, unique queues per test."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from funboost.testing import require_available
from funboost.testing.frameworks import unique_queue_name
from funboost.testing.fixtures import consumers  # noqa: F401 - a fixture of these tests
from funboost_rq import RqBroker, RqOptions

REDIS_URL = os.environ.get("FUNBOOST_RQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

def check(url: str = REDIS_URL) -> None:
    require_available(RqBroker, RqOptions(redis_url=url))


def drop_queue(name: str, url: str = REDIS_URL) -> None:
    """Delete an rq queue with its jobs and registries (tests only)."""
    b = RqBroker(name, RqOptions(redis_url=url))
    try:
        q = b.queue
        for reg in (q.started_job_registry, q.failed_job_registry, q.finished_job_registry,
                    q.scheduled_job_registry):
            b.conn.delete(reg.key)
        q.delete(delete_jobs=True)
        b.conn.delete(b.keys.intermediate, b.keys.limbo, b.keys.limbo_holder, b.keys.takers)
    finally:
        b.close()


@pytest.fixture
def queue_name() -> Iterator[str]:
    check()
    name = unique_queue_name("fbrq")
    yield name
    for q in (name, f"{name}_dlx"):
        drop_queue(q)
