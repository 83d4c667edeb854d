"""funboost-nameko: ``broker_kind="NAMEKO"`` runs funboost functions as ``@rpc`` methods of nameko services.

Kept free of imports: the nameko service process (:mod:`funboost_nameko.service`) imports this package
right after eventlet's monkey-patching and needs none of funboost's."""
from typing import Any

__all__ = ["NamekoBroker", "NamekoOptions", "NamekoWorkerHost"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "NamekoBroker":
        from funboost_nameko.broker import NamekoBroker
        return NamekoBroker
    if name == "NamekoOptions":
        from funboost_nameko.options import NamekoOptions
        return NamekoOptions
    if name == "NamekoWorkerHost":
        from funboost_nameko.worker import NamekoWorkerHost
        return NamekoWorkerHost
    raise AttributeError(name)
