"""Exceptions users raise in their functions, and errors funboost raises."""
from __future__ import annotations


class FunboostError(Exception):
    """Base of funboost's own errors."""


class UnknownBrokerKind(FunboostError, ValueError):
    """broker_kind names no installed broker plugin."""


class BrokerPluginError(FunboostError):
    """A broker plugin failed to import or does not fulfil the contract."""


class PublishArgumentsError(FunboostError, TypeError):
    """The arguments of push/publish do not fit the function's signature."""


class MalformedMessage(FunboostError, ValueError):
    """A message taken from the broker cannot be decoded into the function's arguments."""


class FunctionTimeoutError(FunboostError, TimeoutError):
    """The function ran longer than function_timeout and was stopped."""


class TaskKilled(FunboostError):
    """The task was cancelled by a remote kill command."""


class RpcNotEnabled(FunboostError):
    """Waiting on a result that will never be written (is_using_rpc_mode is off)."""


class RpcTimeout(FunboostError, TimeoutError):
    """The RPC result did not arrive in time."""


class StateBackendError(FunboostError):
    """A state backend is unknown, unreachable or misused."""


class MessagesRefused(FunboostError, ValueError):
    """A broker's ``publish`` refuses some messages of a batch for what they are (too large, say) before it
    sends anything: ``indexes`` are their positions in the batch. The publishers (group commit, pipelined
    mode) report those messages failed and send the others again, rather than failing the whole batch."""

    def __init__(self, message: str, indexes: "tuple[int, ...] | list[int]") -> None:
        super().__init__(message)
        self.indexes = tuple(indexes)


class PublishRefused(FunboostError):
    """``push`` / ``publish`` cannot apply to this broker kind whatever the message (a ``source_only`` kind
    such as MYSQL_CDC, whose messages come from an outside source). A kind raises a subclass naming itself
    from :meth:`funboost.plugins.broker.Broker.check_accepts_new_messages`."""


# ----- exceptions a task function raises to steer the engine (names as in the original funboost) -----
class ExceptionForRetry(Exception):
    """Raise to ask for a retry explicitly (any exception retries; this one reads clearer)."""


class ExceptionForRequeue(Exception):
    """Raise to put the message back on the queue without counting a retry."""


class ExceptionForPushToDlxqueue(Exception):
    """Raise to move the message to the dead-letter queue ``<queue>_dlx`` at once."""


ExceptionForPushToDlxQueue = ExceptionForPushToDlxqueue
