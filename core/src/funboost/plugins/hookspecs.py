"""pluggy hook specifications: the plugin contract.

Two families live here.

* :class:`BrokerSpec` is the broker data path. Each broker class is checked against it when it is
  registered (argument names must match, see :func:`funboost.plugins.manager.validate_broker_class`).
  The data path is dispatched only to the broker that owns the queue: the engine holds the validated
  broker instance and calls it directly, so installing ten brokers costs nothing per message.
* The ``funboost_*`` hooks are process-wide and fan out to every plugin of the ``funboost.plugins``
  entry-point group: registration (``funboost_register_brokers``) and cross-cutting observers
  (before/after publish, around execute, on error). Metrics, tracing and serializers use these.
"""
from __future__ import annotations

from typing import Any, Sequence

import pluggy

PROJECT_NAME = "funboost"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class BrokerSpec:
    """The data path of a broker kind (batch-first). See :class:`funboost.plugins.broker.Broker`."""

    @hookspec(firstresult=True)
    def publish(self, messages: Sequence[Any]) -> None:
        """Store ``messages`` (a list of OutgoingMessage); return once the broker holds them."""

    @hookspec(firstresult=True)
    def fetch(self, max_count: int, timeout: float) -> list:
        """Take up to ``max_count`` deliveries, waiting at most ``timeout`` seconds for the first."""

    @hookspec(firstresult=True)
    def ack(self, deliveries: Sequence[Any]) -> None:
        """Finish these deliveries for good."""

    @hookspec(firstresult=True)
    def requeue(self, deliveries: Sequence[Any]) -> None:
        """Put these deliveries back so that they run again."""

    @hookspec(firstresult=True)
    def reject(self, deliveries: Sequence[Any], reason: str) -> None:
        """Move these deliveries to the dead-letter queue with ``reason``."""

    @hookspec(firstresult=True)
    def queue_size(self) -> Any:
        """Return a QueueSize (ready, in_flight, delayed; None where unknown)."""

    @hookspec(firstresult=True)
    def purge(self) -> int:
        """Drop every ready message; return the count, or -1 if the broker cannot tell."""

    @hookspec(firstresult=True)
    def close(self) -> None:
        """Release connections and threads."""


class FunboostSpec:
    """Process-wide hooks for plugins of the ``funboost.plugins`` and ``funboost.brokers`` groups."""

    @hookspec
    def funboost_register_brokers(self, registry: Any) -> None:
        """Register one or more broker classes: ``registry.register(MyBroker)``."""

    @hookspec
    def funboost_before_publish(self, queue_name: str, message: dict) -> None:
        """Called with the envelope (a dict) before it is encoded; may add keys to ``message['extra']``."""

    @hookspec
    def funboost_after_publish(self, queue_name: str, task_ids: Sequence[str]) -> None:
        """Called after a batch was handed to the broker."""

    @hookspec(firstresult=True)
    def funboost_execute(self, queue_name: str, task: Any, call: Any) -> Any:
        """Wrap the execution of one attempt. Implement with ``wrapper=True``; ``call()`` runs it."""

    @hookspec
    def funboost_after_execute(self, queue_name: str, status: Any) -> None:
        """Called with the FunctionResultStatus after each final outcome of a task."""

    @hookspec
    def funboost_on_error(self, queue_name: str, status: Any, exception: BaseException) -> None:
        """Called when an attempt raised."""
