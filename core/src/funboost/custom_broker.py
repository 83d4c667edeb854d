"""The original funboost's way of adding a broker: a publisher class and a consumer class.

Code written for the original adds a broker in one of two ways, and both run here unchanged:

* ``register_custom_broker(kind, MyPublisher, MyConsumer)`` with subclasses of :class:`AbstractPublisher`
  (``_publish_impl(msg)``, ``clear()``, ``get_message_count()``, ``close()``) and of
  :class:`~funboost.compat.AbstractConsumer` (``_dispatch_task()``, a loop that takes messages from the
  user's store and hands each to ``self._submit_task({'body': ...})``; ``_confirm_consume(kw)``;
  ``_requeue(kw)``), then ``@boost(..., broker_kind=kind)``;
* ``BoosterParams(broker_kind=BrokerEnum.EMPTY, publisher_override_cls=MyPublisher,
  consumer_override_cls=MyConsumer)`` for one queue, with :class:`EmptyPublisher` / :class:`EmptyConsumer`
  (the same methods, declared abstract so that a missing one fails at class creation).

Here a broker is one :class:`~funboost.plugins.broker.Broker` subclass (the plugin API). This module turns
such a class pair into one (:func:`legacy_broker_class`): ``publish`` calls the publisher's
``_publish_impl`` with the JSON envelope, ``fetch`` takes what the consumer's ``_dispatch_task`` submitted
(through a bounded hand-off, so a fast store never floods memory: ``_submit_task`` blocks while the
consumer is busy, as the original's bounded pool did), ``ack`` / ``requeue`` call ``_confirm_consume`` /
``_requeue``. Every funboost control then applies as on any other kind. Delivery guarantees are the
user's store's: the kind declares none (not at-least-once, not persistent).
"""
from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from pydantic import BaseModel, ConfigDict

from funboost.plugins.broker import Broker, Capabilities, Delivery, OutgoingMessage, QueueSize

if TYPE_CHECKING:  # pragma: no cover
    from funboost.compat import AbstractConsumer
    from funboost.params import BoosterParams

logger = logging.getLogger("funboost.custom_broker")

__all__ = ["AbstractPublisher", "EmptyPublisher", "EmptyConsumer", "ConsumerStopping", "EmptyBroker",
           "legacy_broker_class", "is_legacy_publisher_class"]


class AbstractPublisher(abc.ABC):
    """Base of a publisher class of the original's custom-broker API (see the module docstring).

    The framework creates one instance per queue and process, with ``publisher_params`` (a
    :class:`~funboost.params.PublisherParams`; ``queue_name`` is also an attribute); ``custom_init()`` runs
    at the end of ``__init__``. A subclass implements ``_publish_impl(msg)`` (``msg`` is the JSON text of
    the message) and, for ``clear`` / ``get_message_count`` on the booster, those two methods.

    A booster is registered as a virtual subclass: ``isinstance(f.publisher, AbstractPublisher)`` holds, as
    in the original, where ``f.publisher`` was an AbstractPublisher.
    """

    def __init__(self, publisher_params: Any = None, *args: Any, **kwargs: Any) -> None:
        self.publisher_params = publisher_params
        self.queue_name: str = getattr(publisher_params, "queue_name", None) or str(publisher_params)
        self._queue_name = self.queue_name  # the original's attribute name
        self.logger = logging.getLogger(f"funboost.{self.queue_name}.publisher")
        self.custom_init()

    def custom_init(self) -> None:
        """Open connections etc.; called at the end of ``__init__``."""

    def _publish_impl(self, msg: str) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must implement _publish_impl(msg: str)")

    def concrete_realization_of_publish(self, msg: str) -> None:  # the name older releases used
        self._publish_impl(msg)

    def clear(self) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement clear()")

    def get_message_count(self) -> int:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement get_message_count()")

    def close(self) -> None:
        """Release connections."""


class EmptyPublisher(AbstractPublisher):
    """The original's template for a broker's publisher: every method a broker needs is abstract."""

    @abc.abstractmethod
    def _publish_impl(self, msg: str) -> None: ...

    @abc.abstractmethod
    def clear(self) -> Any: ...

    @abc.abstractmethod
    def get_message_count(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class ConsumerStopping(Exception):
    """Raised by ``_submit_task`` once the consumer stops: it ends the user's ``_dispatch_task`` loop. The
    message it was given was handed back with ``_requeue`` first."""


def __getattr__(name: str) -> Any:
    if name == "EmptyConsumer":  # derives from the engine's consumer: lives in funboost.compat
        from funboost.compat import EmptyConsumer
        return EmptyConsumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_legacy_publisher_class(cls: Any) -> bool:
    """A publisher class of the original's API (not a booster)."""
    from funboost.booster import Booster
    return isinstance(cls, type) and issubclass(cls, AbstractPublisher) and not issubclass(cls, Booster)


class _HandOff:
    """Bounded FIFO between the user's ``_dispatch_task`` thread and the engine's fetch: ``put`` blocks
    while full; ``close`` wakes everyone and returns what was never taken."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            while len(self._items) >= self.capacity and not self.closed:
                self._cond.wait()
            if self.closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def take(self, max_count: int, timeout: float) -> list:
        with self._cond:
            if not self._items and not self.closed and timeout > 0:
                self._cond.wait_for(lambda: self._items or self.closed, timeout)
            out: list = []
            while self._items and len(out) < max_count:
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out

    def close(self) -> list:
        with self._cond:
            self.closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        return len(self._items)


class UserClassOptions(BaseModel):
    """``broker_exclusive_config`` of a custom broker: whatever the user's classes read (any keys), handed to
    them as ``publisher_params.broker_exclusive_config`` / ``consumer_params.broker_exclusive_config``."""

    model_config = ConfigDict(extra="allow")


class _LegacyClassesBroker(Broker):
    """A broker kind made of an original-style publisher class and consumer class (see the module
    docstring). Subclasses made by :func:`legacy_broker_class` set the two classes."""

    kind: ClassVar[str] = "legacy_classes"
    # _requeue(kw) is the user's way to put a message back: used for requeues and hand-backs on stop
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_requeue=True, queue_size="approximate", notes="a publisher class and a consumer class of the original funboost's "
                                        "API: delivery guarantees are those of the user's store")
    options_model: ClassVar[type[BaseModel]] = UserClassOptions
    publisher_class: ClassVar[Optional[type]] = None
    #: the engine consumer class the booster uses for this kind (the user's AbstractConsumer subclass)
    legacy_consumer_class: ClassVar[Optional[type]] = None

    def __init__(self, queue_name: str, options: Any = None) -> None:
        super().__init__(queue_name, options)
        self._publisher: Optional[AbstractPublisher] = None
        self._publisher_lock = threading.Lock()
        self._consumer: Optional["AbstractConsumer"] = None
        self._handoff: Optional[_HandOff] = None
        self._dispatcher: Optional[threading.Thread] = None
        self._submitting = 0  # _submit_task calls in progress: each holds a message taken from the user's store
        self._submitting_cond = threading.Condition()

    # ---- publishing side: the user's publisher instance
    def publisher(self) -> AbstractPublisher:
        if self._publisher is None:
            with self._publisher_lock:
                if self._publisher is None:
                    if self.publisher_class is None:
                        raise TypeError(f"broker kind {self.kind!r} has no publisher class: give "
                                        f"publisher_override_cls (an EmptyPublisher subclass)")
                    from funboost.params import PublisherParams
                    params = PublisherParams.model_construct(
                        queue_name=self.queue_name, broker_kind=self.kind,
                        broker_exclusive_config=dict(self.options.model_extra or {}))
                    self._publisher = self.publisher_class(params)
        return self._publisher

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        p = self.publisher()
        impl = (p.concrete_realization_of_publish
                if type(p).concrete_realization_of_publish is not AbstractPublisher.concrete_realization_of_publish
                else p._publish_impl)
        for m in messages:
            impl(m.body)

    def queue_size(self) -> QueueSize:
        try:
            n = self.publisher().get_message_count()
        except NotImplementedError:
            return QueueSize(ready=None)
        ready = int(n) if isinstance(n, (int, float)) and n >= 0 else None  # the original used -1 for unknown
        handed = len(self._handoff) if self._handoff is not None else 0
        return QueueSize(ready=None if ready is None else ready + handed)

    def purge(self) -> int:
        before = self.queue_size().ready
        self.publisher().clear()
        return before if before is not None else -1

    # ---- consuming side: the user's consumer instance is the engine's consumer of this queue
    def run_consumer(self, consumer: Any) -> bool:
        if getattr(type(consumer), "_dispatch_task", None) is None:
            raise TypeError(f"broker kind {self.kind!r} needs a consumer class with _dispatch_task(): give "
                            f"consumer_override_cls (an EmptyConsumer subclass)")
        self._consumer = consumer
        # room for what the executor can hold: fetch batches stay full, the user's loop waits when busy
        self._handoff = _HandOff(consumer.concurrency + 1)
        consumer._legacy_broker = self
        self._dispatcher = threading.Thread(target=self._run_dispatch, daemon=True,
                                            name=f"funboost-{self.queue_name}-dispatch_task")
        self._dispatcher.start()
        return False  # the engine's fetch loop takes from the hand-off

    def _run_dispatch(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        backoff = 0.5
        while not consumer.stopped:
            try:
                consumer._dispatch_task()  # type: ignore[attr-defined]  # the user's class has it (run_consumer checks)
                return  # the user's loop ended by itself
            except ConsumerStopping:
                return
            except Exception:  # noqa: BLE001 - a broken store must not end consuming for good
                if consumer.stopped:
                    return
                consumer.logger.exception("%s._dispatch_task failed; restarting it in %.1f s",
                                          type(consumer).__qualname__, backoff)
                if consumer.stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)

    def submit(self, kw: dict) -> None:
        """``AbstractConsumer._submit_task``: hand one message (``kw['body']``: the message as a dict or its
        JSON text) to the engine; blocks while the consumer is busy."""
        if not isinstance(kw, dict) or "body" not in kw:
            raise TypeError(f"_submit_task(kw) takes a dict with the message under 'body', got {kw!r}")
        body = kw["body"]
        if not isinstance(body, (dict, str, bytes, bytearray)):
            body = json.dumps(body)  # a list or a number: the engine dead-letters it with the reason
        with self._submitting_cond:
            self._submitting += 1
        try:
            handoff = self._handoff
            if handoff is None or not handoff.put(Delivery(body=body, tag=kw)):
                self._requeue_kw(kw)
                raise ConsumerStopping(f"the consumer of {self.queue_name!r} is stopping")
        finally:
            with self._submitting_cond:
                self._submitting -= 1
                self._submitting_cond.notify_all()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._handoff is None:
            time.sleep(min(timeout, 0.1))  # the dlx instance, or fetch before run_consumer: nothing to take
            return []
        return self._handoff.take(max_count, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self._consumer._confirm_consume(d.tag)  # type: ignore[union-attr]

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self._requeue_kw(d.tag)

    def _requeue_kw(self, kw: dict) -> None:
        if self._consumer is not None:
            self._consumer._requeue(kw)  # type: ignore[attr-defined]  # the user's consumer class supplies it

    def close(self) -> None:
        if self._handoff is not None:
            left = self._handoff.close()  # submitted but never fetched: back to the user's store
            for d in left:
                try:
                    self._requeue_kw(d.tag)
                except Exception as exc:  # noqa: BLE001
                    logger.error("could not hand back a message of %r: %s", self.queue_name, exc)
            # a message the user's loop is submitting goes back through _requeue: wait for that. The loop
            # itself is not joined (it may poll an empty store for long); what it submits from now on goes
            # straight back, and ConsumerStopping ends it
            with self._submitting_cond:
                self._submitting_cond.wait_for(lambda: self._submitting == 0, 5.0)
        if self._publisher is not None:
            try:
                self._publisher.close()
            except NotImplementedError:
                pass
        super().close()


def legacy_broker_class(kind: str, publisher_class: Optional[type], consumer_class: Optional[type]) -> type:
    """The Broker subclass for an original-style publisher / consumer class pair (not registered)."""
    from funboost.compat import AbstractConsumer
    if publisher_class is not None and not is_legacy_publisher_class(publisher_class):
        raise TypeError(f"publisher class {publisher_class!r} must subclass funboost.AbstractPublisher "
                        f"(or EmptyPublisher)")
    if consumer_class is not None and not (isinstance(consumer_class, type)
                                           and issubclass(consumer_class, AbstractConsumer)):
        raise TypeError(f"consumer class {consumer_class!r} must subclass funboost.AbstractConsumer "
                        f"(or EmptyConsumer)")
    key = (str(kind), publisher_class, consumer_class)
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            names = "+".join(c.__qualname__ for c in (publisher_class, consumer_class) if c is not None)
            cls = _classes[key] = type(f"LegacyBroker[{names}]", (_LegacyClassesBroker,), {
                "kind": str(kind), "publisher_class": publisher_class, "legacy_consumer_class": consumer_class,
                "__module__": __name__})
    return cls


_classes: dict = {}
_classes_lock = threading.Lock()


class EmptyBroker(_LegacyClassesBroker):
    """``broker_kind=BrokerEnum.EMPTY``: the queue's ``publisher_override_cls`` and
    ``consumer_override_cls`` are the broker (:meth:`bind_params` makes the class for them)."""

    kind: ClassVar[str] = "EMPTY"

    @classmethod
    def bind_params(cls, params: "BoosterParams") -> type[Broker]:
        if params.publisher_override_cls is None and params.consumer_override_cls is None:
            raise TypeError("broker_kind EMPTY needs publisher_override_cls (an EmptyPublisher subclass) and, to "
                            "consume, consumer_override_cls (an EmptyConsumer subclass)")
        return legacy_broker_class("EMPTY", params.publisher_override_cls, params.consumer_override_cls)
