from funboost.testing import BrokerContract


class TestMemoryContract(BrokerContract):
    broker_kind = "MEMORY_QUEUE"
