"""Alias of the original's module path."""
from funboost.booster import Booster, boost  # noqa: F401
from funboost.registry import BoostersManager  # noqa: F401
