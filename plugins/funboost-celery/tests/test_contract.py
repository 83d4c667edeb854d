"""The funboost contract suite on the celery kind, on Redis and on RabbitMQ.

The data-path tests (publish/fetch/ack/requeue/reject/size/purge/delay/priority/redelivery) pull
Celery messages directly with kombu; the end-to-end tests run a real Celery worker in this process.
"""
from __future__ import annotations

import pytest

from funboost.testing import BrokerContract

from conftest import AMQP_URL, REDIS_CRASH_URL, REDIS_URL, check, drop_queues


class _CeleryContract(BrokerContract):
    broker_kind = "celery"

    @pytest.fixture(autouse=True)
    def _service_and_cleanup(self, queue_name):
        check(self.broker_options["broker_url"])
        yield
        for url in {self.broker_options["broker_url"], self.fast_reclaim_options.get("broker_url",
                                                                                     self.broker_options["broker_url"])}:
            drop_queues(url, queue_name)


class TestCeleryRedisContract(_CeleryContract):
    broker_options = {"broker_url": REDIS_URL}
    # a message pulled by a killed consumer comes back once its process is gone (holder leases); the
    # age-based backstop as short as the lease must not hand a living consumer's message out
    fast_reclaim_options = {"broker_url": REDIS_CRASH_URL, "heartbeat_timeout": 3, "visibility_timeout": 3}
    redelivery_timeout = 20.0


class TestCeleryRabbitmqContract(_CeleryContract):
    broker_options = {"broker_url": AMQP_URL}
    redelivery_timeout = 10.0
