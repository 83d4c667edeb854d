"""Certify the template broker with the contract suite shipped in funboost-core."""
import tempfile

from funboost.testing import BrokerContract


class TestDirectoryBrokerContract(BrokerContract):
    broker_kind = "template_dir"
    broker_options = {"directory": tempfile.mkdtemp(prefix="funboost-template-")}
