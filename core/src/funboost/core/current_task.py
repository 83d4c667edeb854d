"""Alias of the original's module path."""
from funboost.context import fct, funboost_current_task  # noqa: F401
from funboost.compat import get_current_taskid  # noqa: F401
