"""funboost-http: the ``http`` broker kind (consumers serve a small ASGI app over HTTP, publishers and any
HTTP client push to it)."""
from funboost_http.broker import HttpBroker
from funboost_http.errors import HttpBrokerError, MessageTooLarge, NoConsumerAvailable, RemoteTaskError
from funboost_http.options import HttpOptions

__all__ = ["HttpBroker", "HttpOptions", "HttpBrokerError", "MessageTooLarge", "NoConsumerAvailable",
           "RemoteTaskError"]
__version__ = "0.1.0"
