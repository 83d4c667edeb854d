"""Fixtures: dramatiq on the real Redis (db 13; its own namespace) and RabbitMQ of this machine (a vhost of its own), unique queues."""
from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from funboost.testing import require_available
from funboost.testing.frameworks import drop_with_dead_letter, registered_cleanup, unique_queue_name, url_fixture
from funboost.testing.fixtures import consumers  # noqa: F401 - a fixture of these tests
from funboost.testing.services import rabbitmq_test_vhost
from funboost_dramatiq import DramatiqBroker, DramatiqOptions

REDIS_URL = os.environ.get("FUNBOOST_DRAMATIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# RabbitMQ: a vhost of the tests' own when rabbitmqctl is usable (as in CI), else the default vhost
AMQP_URL = (os.environ.get("FUNBOOST_DRAMATIQ_TEST_AMQP_URL") or rabbitmq_test_vhost("funboost_dramatiq_tests")
            or "amqp://guest:guest@127.0.0.1:5672/%2F")

URLS = {"redis": REDIS_URL, "amqp": AMQP_URL}


def check(url: str) -> None:
    require_available(DramatiqBroker, DramatiqOptions(broker_url=url))


broker_url = url_fixture(URLS, check)


@pytest.fixture
def queue_name() -> str:
    return unique_queue_name("fbdq")


def drop_queues(url: str, queue: str) -> None:
    """Purge ``queue`` and its dead-letter queue; on RabbitMQ delete them with dramatiq's delay and
    dead-letter queues (tests only)."""
    def drop(b: DramatiqBroker) -> None:
        b.purge()
        if b.family == "amqp":
            from dramatiq.common import dq_name, xq_name
            for q in (b.queue_name, dq_name(b.queue_name), xq_name(b.queue_name)):
                b.dbroker.channel.queue_delete(q)

    drop_with_dead_letter(queue, lambda name: DramatiqBroker(name, DramatiqOptions(broker_url=url)), drop)


@pytest.fixture
def cleanup_queues() -> Iterator[Callable[[str, str], None]]:
    """Register (url, queue) pairs whose queues (and dead-letter queues) are dropped after the test."""
    yield from registered_cleanup(drop_queues)
