"""The original funboost's ``funboost.constant`` module path (``from funboost.constant import BrokerEnum``)."""
from funboost.enums import BrokerEnum, ConcurrentModeEnum, FunctionKind

__all__ = ["BrokerEnum", "ConcurrentModeEnum", "FunctionKind"]
