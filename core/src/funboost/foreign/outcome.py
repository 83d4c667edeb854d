"""How a funboost run ends, in a framework's words.

A framework's worker settles each of its messages with one of a few verbs. funboost's runner already
did everything of its own (retries, status record, RPC result, dead letter, republish) by the time
the verb is chosen; the verb only tells the framework what to do with *its* message.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from funboost.enums import RunStatus

if TYPE_CHECKING:  # pragma: no cover
    from funboost.records import FunctionResultStatus


class Verb(str, enum.Enum):
    """What the framework does with its message after funboost handled the envelope."""

    #: done: acknowledge and record ``Outcome.result`` as the framework's result (also when funboost
    #: did not run it: filtered, expired, killed or malformed, already recorded / dead-lettered)
    ACK = "ack"
    #: done, failed for good (after funboost's retries, dead-lettered, killed): acknowledge and record a
    #: failure (``Outcome.error``); the framework must not retry it (funboost's retries are the only ones)
    FAIL = "fail"
    #: this message is finished but the task goes on in another one (``ExceptionForRequeue``, retry in
    #: requeue mode): acknowledge without recording any result (Celery ``Ignore``)
    IGNORE = "ignore"
    #: not run, give the message back to the framework's queue unchanged (the consumer is stopping)
    REJECT = "reject"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    verb: Verb
    #: the function's return value (``Verb.ACK``)
    result: Any = None
    #: ``"ExceptionType: message"`` (``Verb.FAIL``) or why it was rejected (``Verb.REJECT``)
    error: str = ""
    #: funboost's final status of the run, None when it did not run
    status: Optional["FunctionResultStatus"] = None


def outcome_of(status: Optional["FunctionResultStatus"]) -> Outcome:
    """The verb for what ``ConsumerHost.execute_inline`` returned."""
    if status is None:  # not run: filtered, expired, killed before start, malformed (handled by funboost)
        return Outcome(Verb.ACK)
    if not _is_final(status.run_status):
        return Outcome(Verb.IGNORE, status=status)
    if status.success:
        return Outcome(Verb.ACK, result=status.result, status=status)
    return Outcome(Verb.FAIL, error=f"{status.exception_type}: {status.exception_msg}", status=status)


def rejected(reason: str) -> Outcome:
    return Outcome(Verb.REJECT, error=reason)


# the statuses after which the task goes on in another message; anything else (a status this core does
# not know included) is final, never "goes on elsewhere". A str-enum member hashes as its value, so plain
# strings from records and RunStatus members both match.
_NOT_FINAL = frozenset(s for s in RunStatus if not s.is_final)


def _is_final(run_status: Any) -> bool:
    try:
        return run_status not in _NOT_FINAL
    except TypeError:  # unhashable: not a status at all
        return True
