"""The core contract suite with the http kind's declared capabilities.

http declares ``needs_serving_consumer`` (through ``ServingBroker``): the suite's ``serve_consumer``
fixture makes every broker it creates serve before anything is published (as ``consume()`` does through
``run_consumer``), and a body that is not a JSON object is refused at publish time with a 400, which the
suite accepts.
"""
from funboost.testing import BrokerContract

from support import free_port


class TestHttpContract(BrokerContract):
    broker_kind = "http"
    broker_options = {"port": free_port(), "publish_timeout": 5.0}
