"""The funboost contract suite on the dramatiq kind, on Redis and on RabbitMQ.

The data-path tests pull dramatiq's storage directly; the end-to-end tests run dramatiq's Worker here."""
from __future__ import annotations

import pytest

from funboost.testing import BrokerContract

from conftest import AMQP_URL, REDIS_URL, check, drop_queues


class _DramatiqContract(BrokerContract):
    broker_kind = "dramatiq"

    @pytest.fixture(autouse=True)
    def _service_and_cleanup(self, queue_name):
        check(self.broker_options["broker_url"])
        yield
        drop_queues(self.broker_options["broker_url"], queue_name)


class TestDramatiqRedisContract(_DramatiqContract):
    broker_options = {"broker_url": REDIS_URL}
    # a message pulled by a killed consumer comes back once its heartbeat is older than this
    fast_reclaim_options = {"heartbeat_timeout": 3}
    redelivery_timeout = 15.0


class TestDramatiqRabbitmqContract(_DramatiqContract):
    broker_options = {"broker_url": AMQP_URL, "max_priority": 9}
    redelivery_timeout = 10.0
