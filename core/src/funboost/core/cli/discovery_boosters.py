"""Alias of the original's module path."""
from funboost.compat import BoosterDiscovery  # noqa: F401
