"""Alias of the original's module path."""
from funboost.custom_broker import EmptyPublisher  # noqa: F401
