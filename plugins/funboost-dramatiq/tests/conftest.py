"""Fixtures: dramatiq on the real Redis (db 13; its own namespace) and RabbitMQ of this machine (a vhost of its own), unique queues."""
from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator

import pytest

from funboost.testing import require_available
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


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request) -> str:
    url = URLS[request.param]
    check(url)
    return url


@pytest.fixture
def queue_name() -> str:
    return f"fbdq_{uuid.uuid4().hex[:12]}"


def drop_queues(url: str, queue: str) -> None:
    for name in (queue, f"{queue}_dlx"):
        b = DramatiqBroker(name, DramatiqOptions(broker_url=url))
        try:
            b.purge()
            if b.family == "amqp":
                from dramatiq.common import dq_name, xq_name
                for q in (name, dq_name(name), xq_name(name)):
                    b.dbroker.channel.queue_delete(q)
        except Exception:
            pass
        finally:
            b.close()


@pytest.fixture
def cleanup_queues() -> Iterator[Callable[[str, str], None]]:
    """Register (url, queue) pairs whose queues (and dead-letter queues) are dropped after the test."""
    todo: list[tuple[str, str]] = []
    yield lambda url, q: todo.append((url, q))
    for url, q in todo:
        drop_queues(url, q)
