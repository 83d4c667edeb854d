"""funboost-huey: ``broker_kind="HUEY"`` runs funboost functions on huey's queues and huey's consumer."""
from funboost_huey.app import FunboostTaskFailed, get_huey
from funboost_huey.broker import HueyBroker, huey_instance, huey_task
from funboost_huey.options import HueyOptions

__all__ = ["HueyBroker", "HueyOptions", "FunboostTaskFailed", "get_huey", "huey_instance", "huey_task"]
__version__ = "0.1.0"
