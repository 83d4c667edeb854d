"""funboost-dramatiq: ``broker_kind="DRAMATIQ"`` runs funboost functions on dramatiq's brokers and Worker."""
from funboost_dramatiq.app import build_broker, get_broker
from funboost_dramatiq.broker import DramatiqBroker, dramatiq_broker
from funboost_dramatiq.options import DramatiqOptions
from funboost_dramatiq.worker import DramatiqWorkerHost, FunboostTaskFailed

__all__ = ["DramatiqBroker", "DramatiqOptions", "DramatiqWorkerHost", "FunboostTaskFailed", "build_broker",
           "get_broker", "dramatiq_broker"]
__version__ = "0.1.0"
