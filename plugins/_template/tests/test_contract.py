"""Certify the template broker with the contract suite shipped in funboost-core (its queue directory
defaults to the per-user data directory, which the suite points at a temporary folder)."""
from funboost.testing import BrokerContract


class TestDirectoryBrokerContract(BrokerContract):
    broker_kind = "template_dir"
