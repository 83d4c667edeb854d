"""Alias of the original's module path."""
from funboost.records import FunctionResultStatus  # noqa: F401
