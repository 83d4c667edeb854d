"""Alias of the original's module path."""
from funboost.exceptions import ExceptionForPushToDlxqueue, ExceptionForRequeue, ExceptionForRetry  # noqa: F401
from funboost.compat import HasNotAsyncResult  # noqa: F401
