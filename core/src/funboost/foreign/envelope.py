"""The funboost envelope carried by a framework's message.

funboost publishes through a framework with one positional argument, the envelope's JSON text (so the
framework stores and forwards it untouched). A plain producer of that framework may call the same
task with keyword arguments: they become an envelope under the framework's task id, so funboost's
RPC result and status records use the id the caller knows.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

from funboost.message import dumps

Body = Union[str, bytes, bytearray]


def envelope_from_foreign(args: Sequence[Any], kwargs: Mapping[str, Any], foreign_task_id: Optional[str] = None,
                          framework: str = "foreign") -> Body:
    """The envelope (JSON text) for a framework message with ``args`` / ``kwargs``.

    * ``(envelope_json,)`` and no kwargs: funboost's own publish, returned as it is;
    * only kwargs: the function's keyword arguments, with ``foreign_task_id`` as the task id;
    * anything else (positional arguments that are not an envelope): wrapped as
      ``{"<framework>_args": [...], "<framework>_kwargs": {...}}``, which the consumer dead-letters
      with the reason, so nothing is lost and nothing runs with guessed arguments.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], (str, bytes, bytearray)):
        return args[0]
    if not args:
        fields = dict(kwargs)
        if foreign_task_id:
            fields["extra"] = {"task_id": str(foreign_task_id)}
        return dumps(fields)
    return dumps({f"{framework}_args": list(args), f"{framework}_kwargs": dict(kwargs)})
