"""The funboost contract suite on the rabbitmq kind with its default configuration (and its aliases
resolve to the same class); priorities work by default, and a queue that already exists with other
arguments gets an error that says what to do."""
from __future__ import annotations

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost.testing import BrokerContract, envelope, fetch_until

from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions
from funboost_rabbitmq.broker import QueueArgumentsMismatch, delete_queues


class TestRabbitmqContract(BrokerContract):
    broker_kind = "rabbitmq"

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


def test_default_declares_a_priority_queue_but_not_for_quorum_queues():
    assert RabbitmqOptions().effective_max_priority() == 10
    assert RabbitmqOptions(max_priority=0).effective_max_priority() == 0
    assert RabbitmqOptions(max_priority=None).effective_max_priority() == 0
    quorum = {"x-queue-type": "quorum"}
    assert RabbitmqOptions(queue_arguments=quorum).effective_max_priority() == 0
    assert RabbitmqOptions(queue_arguments=quorum, max_priority=5).effective_max_priority() == 5


def test_existing_queue_with_other_arguments_gets_a_clear_error(make_broker, queue_name):
    plain = make_broker(queue_name, max_priority=0)  # a queue created without priorities (older default)
    plain.publish([envelope(1)])
    default = make_broker(queue_name)
    with pytest.raises(QueueArgumentsMismatch) as err:
        default.publish([OutgoingMessage(body=envelope(2).body, task_id="t2")])
    text = str(err.value)
    assert queue_name in text and "'max_priority': 0" in text and "delete the queue" in text
    # configured like the existing queue, it works
    [d] = fetch_until(plain, 1, timeout=20)
    plain.ack([d])
