"""Alias of the original's module path."""
from funboost.compat import AbstractPublisher  # noqa: F401
from funboost.params import TaskOptions  # noqa: F401
