"""funboost-grpc: the ``grpc`` broker kind (consumers host a gRPC server, publishers are clients)."""
from funboost_grpc.broker import GrpcBroker
from funboost_grpc.errors import GrpcBrokerError, MessageTooLarge, NoConsumerAvailable, RemoteTaskError
from funboost_grpc.options import GrpcOptions

__all__ = ["GrpcBroker", "GrpcOptions", "GrpcBrokerError", "MessageTooLarge", "NoConsumerAvailable",
           "RemoteTaskError"]
__version__ = "0.1.0"
