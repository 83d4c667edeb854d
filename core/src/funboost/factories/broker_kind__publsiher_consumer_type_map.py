"""Alias of the original's module path."""
from funboost.compat import register_custom_broker  # noqa: F401
