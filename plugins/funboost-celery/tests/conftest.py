"""Fixtures: Celery on the real Redis (db 11..13) and RabbitMQ of this machine, unique queues per test."""
from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from funboost.testing import require_available
from funboost.testing.frameworks import drop_with_dead_letter, registered_cleanup, unique_queue_name, url_fixture
from funboost.testing.fixtures import consumers  # noqa: F401 - a fixture of these tests
from funboost.testing import require_service as require  # noqa: F401 - tests import it from here
from funboost_celery import CeleryBroker, CeleryOptions

REDIS_URL = os.environ.get("FUNBOOST_CELERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
AMQP_URL = os.environ.get("FUNBOOST_CELERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# the crash tests shorten the Redis visibility timeout; that timeout is global to a Redis db, so they
# get a db of their own and never hand out another test's running tasks
REDIS_CRASH_URL = REDIS_URL.rsplit("/", 1)[0] + "/12"

URLS = {"redis": REDIS_URL, "amqp": AMQP_URL}


def check(url: str) -> None:
    require_available(CeleryBroker, CeleryOptions(broker_url=url))


broker_url = url_fixture(URLS, check)


@pytest.fixture
def queue_name() -> str:
    return unique_queue_name("fbcel")


def drop_queues(url: str, queue: str) -> None:
    """Delete ``queue`` and its dead-letter queue (tests only)."""
    drop_with_dead_letter(queue, lambda name: CeleryBroker(name, CeleryOptions(broker_url=url)),
                          CeleryBroker.delete_queue)


@pytest.fixture
def cleanup_queues() -> Iterator[Callable[[str, str], None]]:
    """Register (url, queue) pairs whose queues (and dead-letter queues) are deleted after the test."""
    yield from registered_cleanup(drop_queues)
