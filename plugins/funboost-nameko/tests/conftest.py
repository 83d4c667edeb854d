"""Fixtures: nameko on the real RabbitMQ of this machine, in a vhost of the tests' own
(``funboost_nameko_tests``, created with rabbitmqctl when it is usable, as in CI; otherwise the default
vhost with unique queue names), or at FUNBOOST_NAMEKO_TEST_AMQP_URI when that is set."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from funboost.testing import require_available
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
    for name in (queue, f"{queue}_dlx"):
        b = NamekoBroker(name, NamekoOptions(amqp_uri=uri))
        try:
            b._channel().queue_delete(f"rpc-{name}")
        except Exception:
            pass
        finally:
            b.close()


@pytest.fixture
def queue_name() -> Iterator[str]:
    check()
    name = f"fbnk_{uuid.uuid4().hex[:12]}"
    yield name
    drop_queues(name)
