"""The funboost contract suite on the rabbitmq kind (and its aliases resolve to the same class)."""
from __future__ import annotations

import pytest

from funboost.plugins.manager import resolve_broker_kind
from funboost.testing import BrokerContract

from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions
from funboost_rabbitmq.broker import delete_queues


class TestRabbitmqContract(BrokerContract):
    broker_kind = "rabbitmq"
    # priorities need a priority queue (x-max-priority), which is opt-in per queue
    broker_options = {"max_priority": 10}

    @pytest.fixture(autouse=True)
    def _delete_queues_afterwards(self, queue_name):
        yield
        try:  # the suite purges and closes; RabbitMQ queues also need deleting
            delete_queues(RabbitmqOptions().resolved_url(), 30, queue_name)
        except Exception:
            pass


def test_aliases_resolve_to_the_same_class():
    for name in ("rabbitmq", "RABBITMQ_PIKA", "rabbitmq_amqpstorm", "RABBITMQ"):
        assert resolve_broker_kind(name) is RabbitmqBroker
