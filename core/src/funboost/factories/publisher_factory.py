"""Alias of the original's module path."""
from funboost.compat import get_publisher  # noqa: F401
