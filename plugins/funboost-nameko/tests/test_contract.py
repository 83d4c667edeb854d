"""The funboost contract suite on the nameko kind (the end-to-end tests run nameko service processes)."""
from __future__ import annotations

import pytest

from funboost.testing import BrokerContract

from conftest import AMQP_URI, check, drop_queues


class TestNamekoContract(BrokerContract):
    broker_kind = "nameko"
    broker_options = {"amqp_uri": AMQP_URI}
    redelivery_timeout = 10.0

    @pytest.fixture(autouse=True)
    def _service_and_cleanup(self, queue_name):
        check()
        yield
        drop_queues(queue_name)
