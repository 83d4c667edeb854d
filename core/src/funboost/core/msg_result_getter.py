"""Alias of the original's module path."""
from funboost.result import AsyncResult, AioAsyncResult  # noqa: F401
from funboost.compat import HasNotAsyncResult  # noqa: F401
