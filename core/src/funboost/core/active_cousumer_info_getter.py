"""Alias of the original's module path (its spelling kept)."""
from funboost.compat import ActiveCousumerProcessInfoGetter  # noqa: F401
