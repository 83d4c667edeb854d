"""Fixtures: nameko on the real RabbitMQ of this machine, in a vhost of the tests' own
(``funboost_nameko_tests``, created with rabbitmqctl when it is usable, as in CI; otherwise the default
vhost with unique queue names), or at FUNBOOST_NAMEKO_TEST_AMQP_URI when that is set."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from funboost.testing import require_available
from funboost.testing.frameworks import drop_with_dead_letter, unique_queue_name
from funboost.testing.fixtures import consumers  # noqa: F401 - a fixture of these tests
from funboost.testing.services import rabbitmq_test_vhost
from funboost_nameko import NamekoBroker, NamekoOptions

AMQP_URI = (os.environ.get("FUNBOOST_NAMEKO_TEST_AMQP_URI") or rabbitmq_test_vhost("funboost_nameko_tests") or
            "amqp://guest:guest@127.0.0.1:5672/")
# boosters with the default configuration, and the processes the tests start, use the same vhost
os.environ["FUNBOOST_NAMEKO_AMQP_URI"] = AMQP_URI



def check(uri: str = AMQP_URI) -> None:
    require_available(NamekoBroker, NamekoOptions(amqp_uri=uri))


def drop_queues(queue: str, uri: str = AMQP_URI) -> None:
    drop_with_dead_letter(queue, lambda name: NamekoBroker(name, NamekoOptions(amqp_uri=uri)),
                          lambda b: b._channel().queue_delete(f"rpc-{b.queue_name}"))


@pytest.fixture
def queue_name() -> Iterator[str]:
    check()
    name = unique_queue_name("fbnk")
    yield name
    drop_queues(name)
