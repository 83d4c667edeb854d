"""The contract suite applied to the kind named by ``--funboost-broker``."""
from funboost.testing.contract_base import BrokerContract


class TestBrokerContract(BrokerContract):
    broker_kind = ""  # taken from --funboost-broker
