"""funboost-tcp: the ``tcp`` broker kind (consumers listen on a TCP port, publishers connect to them)."""
from funboost_tcp.broker import TcpBroker
from funboost_tcp.errors import MessageTooLarge, NoConsumerAvailable, RemoteTaskError, TcpBrokerError
from funboost_tcp.options import TcpOptions

__all__ = ["TcpBroker", "TcpOptions", "TcpBrokerError", "MessageTooLarge", "NoConsumerAvailable", "RemoteTaskError"]
__version__ = "0.1.0"
