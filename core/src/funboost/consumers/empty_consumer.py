"""Alias of the original's module path."""
from funboost.compat import EmptyConsumer  # noqa: F401
