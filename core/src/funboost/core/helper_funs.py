"""Alias of the original's module path."""
from funboost.booster import run_forever  # noqa: F401
