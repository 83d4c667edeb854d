"""Alias of the original's module path."""
from funboost.params import BoosterParams, FunctionResultStatusPersistanceConfig, PublisherParams, TaskOptions  # noqa: F401
from funboost.compat import BoosterParamsComplete  # noqa: F401

PriorityConsumingControlConfig = TaskOptions  # the name of TaskOptions in earlier original versions
