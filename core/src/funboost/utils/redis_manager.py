"""Alias of the original's module path."""
from funboost.compat import RedisMixin  # noqa: F401
