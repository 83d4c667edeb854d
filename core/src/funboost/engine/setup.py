"""What the engine needs from a booster to consume its queue, and nothing else.

The booster builds a :class:`ConsumerSetup` (``Booster.consumer_setup()``); the engine's ``Consumer`` and
``Runner`` use only this, so the engine does not depend on the decorator's handle (its publishing API,
its registry, its pickling)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from funboost.params import BoosterParams
    from funboost.plugins.broker import Broker
    from funboost.state.base import StateBackend


@dataclass(frozen=True)
class ConsumerSetup:
    """Everything one queue's consumer needs."""

    #: the queue's validated parameters
    params: "BoosterParams"
    #: the queue's logger
    logger: logging.Logger
    #: the function the runner calls with the task's keyword arguments (``consuming_function_decorator``
    #: already applied)
    func: Callable[..., Any]
    #: the function's qualified name, for log lines and errors
    func_name: str
    #: True for an ``async def`` function
    is_coroutine: bool
    #: makes a new broker instance for this queue (the consumer owns and closes it)
    new_broker: Callable[[], "Broker"]
    #: returns the queue's state backend (called lazily, on first use)
    state_backend: Callable[[], "StateBackend"]
    #: checks a message's arguments against the function and rebuilds method receivers; raises
    #: ``TypeError`` when they do not fit
    convert_kwargs: Callable[[dict], dict]
    #: the function's argument names and the required ones (recorded in the queue catalog, for tools
    #: that cannot import the function, such as the web manager's publish form)
    #: checks only that a message's argument names (a set-like) fit the function (``TypeError``), without
    #: converting anything: for a server transport that answers a misfit request at once
    check_arguments: Optional[Callable[[Any], None]] = None
    arg_names: tuple[str, ...] = ()
    required_args: tuple[str, ...] = ()
