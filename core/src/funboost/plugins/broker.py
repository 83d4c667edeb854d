"""The broker contract: what a broker plugin implements.

A broker *kind* is a class derived from :class:`Broker`. The engine creates one instance per queue and
per process and talks to it only through the batch-first methods below. The method signatures are also
declared as pluggy hookspecs (:mod:`funboost.plugins.hookspecs`); every broker class is validated against
them when it is registered, so a typo in a method's argument names fails at registration, not at 3 a.m.

Data path (all batch-first; the engine batches, so a broker never has to):

``publish(messages)``            store a list of :class:`OutgoingMessage`; return when the broker has them
``fetch(max_count, timeout)``    take up to ``max_count`` messages, waiting at most ``timeout`` seconds
``ack(deliveries)``              the work for these deliveries is finished for good
``requeue(deliveries)``          put these deliveries back to be run again
``reject(deliveries, reason)``   move these deliveries to the dead-letter queue ``<queue>_dlx``
``queue_size()``                 :class:`QueueSize` with ready / in-flight / delayed counts (``None`` = unknown)
``purge()``                      drop every ready message; return how many were dropped (or -1 if unknown)
``close()``                      release connections and threads
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from funboost.plugins.host import ConsumerHost


class NoOptions(BaseModel):
    """Options model for a broker that takes no ``broker_exclusive_config`` keys."""

    model_config = ConfigDict(extra="forbid")


class BrokerOptions(BaseModel):
    """Base for a broker's ``broker_exclusive_config`` model. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True)
class Capabilities:
    """What a broker kind really does. The engine chooses fallbacks from it; the contract suite chooses
    the tests; ``funboost brokers`` shows it.

    ``queue_size``: ``"exact"``, ``"approximate"`` or ``"none"`` (never report a fake 0).
    ``ordering``: ``"fifo"``, ``"partition"`` (per key/partition), ``"priority"`` or ``"none"``.
    """

    at_least_once: bool = False  # a message taken by a consumer killed with SIGKILL comes back
    persistent: bool = False  # messages survive a broker/server restart
    native_requeue: bool = False
    dead_letter: bool = True  # reject() moves the message to <queue>_dlx
    native_delay: bool = False  # the broker holds a message until its eta
    priority: bool = False
    ordering: str = "fifo"
    queue_size: str = "exact"
    in_flight_count: bool = False  # queue_size().in_flight is known
    purge: bool = True
    broadcast: bool = False  # every live consumer gets every message (pub/sub)
    request_response: bool = False  # supports sync_call
    cross_process: bool = True  # publishers and consumers may be different processes
    max_priority: int = 0
    # transports without a server (grpc, tcp, http): a message can only be published to a consumer that
    # serves the queue; the broker implements serve(), which the contract suite calls before publishing
    needs_serving_consumer: bool = False
    # what the flags above cannot say (e.g. a guarantee that depends on an option); shown by `funboost brokers`
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OutgoingMessage:
    """One message to publish. ``body`` is the JSON envelope text.

    ``eta`` (epoch seconds) is only set for brokers with ``native_delay``; the engine emulates delay for
    the others. ``priority`` is only set for brokers with ``priority``. ``key`` is an ordering/partition key.
    """

    body: str
    task_id: str = ""
    priority: Optional[int] = None
    eta: Optional[float] = None
    key: Optional[str] = None
    headers: dict[str, str] = field(default_factory=dict)
    # the decoded envelope; in-process brokers may keep it instead of re-parsing ``body``
    payload: Optional[dict] = None


@dataclass
class Delivery:
    """One message taken from a broker. ``tag`` is whatever the broker needs to ack/requeue it."""

    body: Any  # str or bytes (JSON text); the memory broker may hand over a dict
    tag: Any = None
    redelivered: bool = False
    # filled in by the engine once decoded, so ack/reject paths need not decode twice
    task_id: str = ""
    # request/response brokers set this: the engine calls it with the final FunctionResultStatus
    # (attributes success, result, exception_type, exception_msg; .to_dict()) before acking
    reply: Optional[Callable[[Any], None]] = None
    # settled by the broker's own worker (a foreign framework acks it when the task returns): the engine
    # does not ack it, and skips the ack batcher
    auto_ack: bool = False


@dataclass
class QueueSize:
    ready: Optional[int]
    in_flight: Optional[int] = None
    delayed: Optional[int] = None

    @property
    def total(self) -> Optional[int]:
        if self.ready is None:
            return None
        return self.ready + (self.in_flight or 0) + (self.delayed or 0)

    def as_dict(self) -> dict[str, Optional[int]]:
        return {"ready": self.ready, "in_flight": self.in_flight, "delayed": self.delayed}


class BrokerUnavailable(ConnectionError):
    """The broker's server cannot be reached (used by availability checks and the contract suite)."""


def new_consumer_id(queue_name: str) -> str:
    """An id that names one consumer instance: ``<queue>@<host>:<pid>:<random>`` (the random part because
    pids are reused)."""
    return f"{queue_name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Broker:
    """Base class of every broker kind. Subclasses set ``kind``, ``capabilities``, ``options_model``.

    An instance serves one queue in one process. It may be used from several threads at once: the
    engine's dispatch thread calls ``fetch``, the ack flusher calls ``ack``, and any thread may
    ``publish``. A broker whose client is not thread-safe must guard it (see the rabbitmq plugin).
    """

    kind: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities()
    options_model: ClassVar[type[BaseModel]] = NoOptions
    # in-process brokers set this: publish() then gets OutgoingMessage.payload (the envelope dict)
    # and an empty body, saving a JSON round trip
    accepts_payload: ClassVar[bool] = False
    # brokers whose client must keep polling to stay alive (Kafka group membership) set this: while
    # the executor is full the engine then calls fetch(0, 0.0) about once a second
    poll_while_busy: ClassVar[bool] = False
    # filled in by the registry: which distribution provides this kind
    distribution: ClassVar[str] = ""
    distribution_version: ClassVar[str] = ""

    def __init__(self, queue_name: str, options: Optional[BaseModel] = None) -> None:
        self.queue_name = queue_name
        self.options = options if options is not None else self.options_model()
        self.consumer_id = new_consumer_id(queue_name)
        self._dlx: Optional["Broker"] = None
        self._dlx_lock = threading.Lock()

    # ----- class-level helpers -----
    @classmethod
    def parse_options(cls, raw: Optional[dict]) -> BaseModel:
        """Validate ``broker_exclusive_config`` against this kind's options model."""
        return cls.options_model(**(raw or {}))

    @classmethod
    def check_available(cls, options: BaseModel) -> Optional[str]:
        """Return ``None`` if the server is reachable, else a human reason (used to skip/fail tests)."""
        return None

    # ----- data path (override) -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise NotImplementedError

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        raise NotImplementedError

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        raise NotImplementedError

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        raise NotImplementedError

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Default dead-letter path: publish each body, annotated with the reason, to ``<queue>_dlx``
        on the same kind, then ack the originals. Brokers with a native dead-letter mechanism override."""
        if not deliveries:
            return
        dlx = self.dead_letter_broker()
        out = []
        for d in deliveries:
            out.append(OutgoingMessage(body=annotate_dead_letter(d.body, reason), task_id=d.task_id))
        dlx.publish(out)
        self.ack(deliveries)

    def queue_size(self) -> QueueSize:
        raise NotImplementedError

    def purge(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        if self._dlx is not None:
            self._dlx.close()

    # ----- optional -----
    def run_consumer(self, consumer: "ConsumerHost") -> bool:
        """A broker that must own the consume loop (a foreign framework's worker, a server) overrides
        this, starts consuming in the background and returns True. The default fetch loop is used
        otherwise. ``consumer`` may be used only through the :class:`~funboost.plugins.host.ConsumerHost`
        protocol."""
        return False

    def serve(self) -> None:
        """Kinds with ``capabilities.needs_serving_consumer``: start accepting messages for this queue
        without the engine (the engine starts serving through ``run_consumer``)."""
        raise NotImplementedError(f"broker kind {self.kind!r} does not serve (needs_serving_consumer=False)")

    def sync_call(self, body: str, timeout: float) -> Any:
        """Request/response kinds (``capabilities.request_response``) run the function remotely."""
        raise NotImplementedError(f"broker kind {self.kind!r} does not support sync_call")

    # ----- helpers for subclasses -----
    def dead_letter_broker(self) -> "Broker":
        with self._dlx_lock:
            if self._dlx is None:
                self._dlx = type(self)(dead_letter_queue_name(self.queue_name), self.options)
            return self._dlx


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}_dlx"


def annotate_dead_letter(body: Any, reason: str) -> str:
    """Add the dead-letter reason to a message body. A body that is not a JSON object is wrapped so that
    nothing is lost: ``{"raw_body": "...", "extra": {"dead_letter_reason": ...}}``."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            body = bytes(body).decode("latin-1")
    obj: Any
    if isinstance(body, dict):
        obj = dict(body)
    else:
        try:
            obj = json.loads(body)
        except (ValueError, TypeError):
            obj = None
        if not isinstance(obj, dict):
            obj = {"raw_body": body if isinstance(body, str) else repr(body)}
    extra = dict(obj.get("extra") or {}) if isinstance(obj.get("extra"), dict) else {}
    extra["dead_letter_reason"] = reason
    extra["dead_letter_time"] = round(time.time(), 4)
    obj["extra"] = extra
    return json.dumps(obj, ensure_ascii=False, default=repr)
