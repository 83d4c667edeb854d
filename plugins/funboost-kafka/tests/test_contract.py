"""The core's broker contract suite applied to the kafka kind."""
from funboost.testing import BrokerContract

from conftest import TEST_OPTIONS


class TestKafkaContract(BrokerContract):
    broker_kind = "kafka"
    broker_options = dict(TEST_OPTIONS)
    # a killed member is noticed after the session timeout (6 s), then the group rejoins
    redelivery_timeout = 20.0
    consumer_ready_timeout = 10.0
