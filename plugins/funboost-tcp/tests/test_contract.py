"""The core contract suite with the tcp kind's declared capabilities.

tcp declares ``needs_serving_consumer``: the suite's ``serve_consumer`` fixture makes every broker it
creates serve before anything is published (as ``consume()`` does through ``run_consumer``), and a body
that is not a JSON object is refused at publish time (``BAD_REQUEST``), which the suite accepts.
"""
from funboost.testing import BrokerContract

from support import free_port



class TestTcpContract(BrokerContract):
    broker_kind = "tcp"
    broker_options = {"port": free_port(), "publish_timeout": 5.0}
