"""pluggy hook specifications: the plugin contract.

Three families live here.

* :class:`BrokerSpec` is the broker data path. Each broker class is checked against it when it is
  registered (argument names must match, see :func:`funboost.plugins.manager.validate_broker_class`).
  The data path is dispatched only to the broker that owns the queue: the engine holds the validated
  broker instance and calls it directly, so installing ten brokers costs nothing per message.
* :class:`RegistrationSpec` holds ``funboost_register_brokers``, the hook of a *module-style* entry point
  of the ``funboost.brokers`` group (an entry point naming a module rather than a Broker class). The
  broker registry calls it through pluggy when one of the entry point's kinds is first used, so its
  argument names are validated like any hook.
* :class:`FunboostSpec` holds the process-wide observers, fanned out to every plugin of the
  ``funboost.plugins`` entry-point group: before/after publish, around execute, after execute, on
  error. Metrics and tracing plugins (funboost-otel) use these.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from funboost.engine.runner import Task
    from funboost.plugins.broker import Delivery, OutgoingMessage, QueueSize
    from funboost.plugins.manager import BrokerRegistry
    from funboost.records import FunctionResultStatus

PROJECT_NAME = "funboost"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class BrokerSpec:
    """The data path of a broker kind (batch-first). See :class:`funboost.plugins.broker.Broker`."""

    @hookspec(firstresult=True)
    def publish(self, messages: "Sequence[OutgoingMessage]") -> None:
        """Store messages; return once the broker holds them (durably, for a persistent kind).

        :param messages: the messages to store, in publish order; ``eta`` is only set when the kind
            has ``native_delay``, ``priority`` only when it has ``priority``.
        """

    @hookspec(firstresult=True)
    def publish_begin(self, messages: "Sequence[OutgoingMessage]") -> "Callable[[], None]":  # type: ignore[empty-body]
        """Start storing messages; return a function that blocks until the broker holds all of them and
        raises what ``publish`` would raise. Optional: :class:`~funboost.plugins.broker.Broker` provides
        it as ``publish`` followed by a no-op; a kind whose client confirms asynchronously overrides it so
        that ``publish_mode="pipelined"`` keeps several batches in flight.
        """

    @hookspec(firstresult=True)
    def fetch(self, max_count: int, timeout: float) -> "list[Delivery]":  # type: ignore[empty-body]
        """Take up to ``max_count`` deliveries.

        :param max_count: the most deliveries to return (the engine's free capacity); 0 is a keep-alive
            poll that returns nothing.
        :param timeout: seconds to wait for the first delivery when none is ready; return an empty
            list when it passes.
        """

    @hookspec(firstresult=True)
    def ack(self, deliveries: "Sequence[Delivery]") -> None:
        """Finish deliveries for good: they never come back.

        :param deliveries: deliveries this instance handed out with ``fetch``.
        """

    @hookspec(firstresult=True)
    def requeue(self, deliveries: "Sequence[Delivery]") -> None:
        """Put deliveries back so that they run again (any consumer may take them).

        :param deliveries: deliveries this instance handed out with ``fetch``.
        """

    @hookspec(firstresult=True)
    def reject(self, deliveries: "Sequence[Delivery]", reason: str) -> None:
        """Move deliveries to the dead-letter queue ``<queue>_dlx``.

        :param deliveries: deliveries this instance handed out with ``fetch``.
        :param reason: why, stored with each message (``extra.dead_letter_reason``).
        """

    @hookspec(firstresult=True)
    def queue_size(self) -> "QueueSize":  # type: ignore[empty-body]
        """Return ready, in-flight and delayed counts (None where the kind cannot tell)."""

    @hookspec(firstresult=True)
    def purge(self) -> int:  # type: ignore[empty-body]
        """Drop every ready message; return the count, or -1 if the broker cannot tell."""

    @hookspec(firstresult=True)
    def close(self) -> None:
        """Release connections and threads; the engine calls it once when the consumer stops."""


class RegistrationSpec:
    """The hook of a module-style ``funboost.brokers`` entry point."""

    @hookspec
    def funboost_register_brokers(self, registry: "BrokerRegistry") -> None:
        """Register one or more broker classes.

        :param registry: the process's broker registry; call ``registry.register(MyBroker)`` (optionally
            with ``aliases=[...]``) for each class. The entry point's own name must be one of the
            registered kind names or aliases.
        """


class FunboostSpec:
    """Process-wide hooks for plugins of the ``funboost.plugins`` entry-point group."""

    @hookspec
    def funboost_before_publish(self, queue_name: str, message: "dict[str, Any]") -> None:
        """Called with each envelope before it is encoded.

        :param queue_name: the queue published to.
        :param message: the envelope: the function's keyword arguments plus ``extra`` (task id,
            publish time, options). An implementation may add keys to ``message['extra']`` (a trace
            context, say); it must not remove any.
        """

    @hookspec
    def funboost_after_publish(self, queue_name: str, task_ids: Sequence[str]) -> None:
        """Called after a batch was handed to the broker.

        :param queue_name: the queue published to.
        :param task_ids: the ids of the tasks in the batch, in publish order.
        """

    @hookspec(firstresult=True)
    def funboost_execute(self, queue_name: str, task: "Task", call: Callable[[], Any]) -> Any:
        """Wrap the execution of one attempt. Implement with ``wrapper=True`` and ``yield``, or call
        ``call()`` and return its result.

        :param queue_name: the task's queue.
        :param task: the task (``task.task_id``, ``task.msg.extra``, ``task.kwargs``).
        :param call: runs the attempt and returns the function's result (or raises its error).
        """

    @hookspec
    def funboost_execute_context(self, queue_name: str, task: "Task") -> "Optional[ContextManager[Any]]":
        """Return a context manager that the engine enters around one attempt of a coroutine function in
        ``async`` mode (or None). ``funboost_execute`` cannot wrap those: pluggy calls hooks synchronously,
        and the attempt is awaited on the event loop. The context manager is entered and left inside the
        task's coroutine, so ``contextvars`` set in ``__enter__`` (a tracing span) are current while the
        function runs; an exception of the attempt reaches its ``__exit__``.

        :param queue_name: the task's queue.
        :param task: the task (``task.task_id``, ``task.msg.extra``, ``task.kwargs``).
        """

    @hookspec
    def funboost_after_execute(self, queue_name: str, status: "FunctionResultStatus") -> None:
        """Called after each final outcome of a task (not after a requeue or a retry-later).

        :param queue_name: the task's queue.
        :param status: the final record (``run_status`` is a :class:`~funboost.enums.RunStatus` value).
        """

    @hookspec
    def funboost_on_error(self, queue_name: str, status: "FunctionResultStatus", exception: BaseException) -> None:
        """Called when an attempt raised (before any retry).

        :param queue_name: the task's queue.
        :param status: the task's record so far (``exception_type`` / ``exception_msg`` set).
        :param exception: what the function raised.
        """
