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

import base64
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

from funboost.message import loads as _json_loads  # orjson: refuses nesting past 1024 with a ValueError

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
    # the messages come from an outside source (mysql_cdc: binlog rows); publish() refuses new messages
    # (only the engine's re-publication of a message it holds is accepted)
    source_only: bool = False
    max_priority: int = 0
    # transports without a server (grpc, tcp, http): a message can only be published to a consumer that
    # serves the queue; the broker implements serve(), which the contract suite calls before publishing
    needs_serving_consumer: bool = False
    # publish(messages) costs about one round trip whatever the list's length and returns once the server
    # confirmed all of them: the kind supports publish_mode="pipelined", and confirmed publishes of
    # several threads are sent together (funboost.publishing)
    pipelined_publish: bool = False
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
    # in-process brokers whose ``fetch(n, 0.0)`` never blocks nor does I/O set this: the engine's worker
    # threads that run out of tasks then fetch the next ones themselves (see Consumer.refill)
    fetch_is_local: ClassVar[bool] = False
    # filled in by the registry: which distribution provides this kind
    distribution: ClassVar[str] = ""
    distribution_version: ClassVar[str] = ""

    def __init__(self, queue_name: str, options: Optional[BaseModel] = None) -> None:
        self.queue_name = queue_name
        self.options = options if options is not None else self.options_model()
        self.consumer_id = new_consumer_id(queue_name)
        self._dlx: Optional["Broker"] = None
        self._dlx_lock = threading.Lock()

    def prepare_consume(self) -> None:
        """Called by ``consume()`` before the consumer starts (no thread, no heartbeat yet). A kind checks
        here what would make every fetch fail for good (its queue declared with other arguments, a queue
        that must exist and does not) and raises with what to change; ``consume()`` then raises it. A
        server that is merely unreachable is not such an error: the consumer starts and reconnects, as
        usual. Default: nothing to check."""

    @property
    def supports_priority(self) -> bool:
        """Whether this instance orders by priority: ``capabilities.priority`` (the kind's default
        configuration) unless a kind overrides it for options that add priorities (a framework whose
        priorities depend on its backend: dramatiq on RabbitMQ with ``max_priority``, huey on SQLite).
        ``publish`` drops a message's priority, with a warning, when this is False."""
        return type(self).capabilities.priority

    # ----- class-level helpers -----
    @classmethod
    def parse_options(cls, raw: Optional[dict]) -> BaseModel:
        """Validate ``broker_exclusive_config`` against this kind's options model."""
        return cls.options_model(**(raw or {}))

    @classmethod
    def bind_params(cls, params: Any) -> "type[Broker]":
        """The class that serves a queue with these BoosterParams: ``cls`` itself for every ordinary kind.
        A kind whose classes come from the queue's parameters (``EMPTY``: ``publisher_override_cls`` and
        ``consumer_override_cls``) returns a subclass made for them."""
        return cls

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        """Return ``None`` if the server is reachable, else a human reason (used to skip/fail tests).
        ``options`` is an instance of this kind's ``options_model`` (a subclass annotates it so)."""
        return None

    # ----- data path (override) -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Store ``messages`` on the broker; return once it has all of them, or raise. A broker that refuses
        some messages for what they are (too large…) raises :class:`funboost.exceptions.MessagesRefused`
        with their indexes *before* sending any: the publishers then fail only those and send the rest."""
        raise NotImplementedError

    def check_accepts_new_messages(self) -> None:
        """Raise :class:`funboost.exceptions.PublishRefused` (a subclass naming the kind, saying what to do
        instead) when ``push`` / ``publish`` cannot apply to this kind at all: ``source_only`` kinds
        override it, and the booster calls it before it judges the arguments (an argument error would
        suggest fixing the arguments). The default accepts."""

    def publish_begin(self, messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
        """Start publishing ``messages``; return a function that blocks until the broker has all of them
        (raising what ``publish`` would raise). ``publish_mode="pipelined"`` keeps a few batches begun
        this way in flight, in order. The default publishes at once and returns a no-op; kinds whose
        client confirms asynchronously (RabbitMQ publisher confirms, Kafka acks) override it."""
        self.publish(messages)
        return nothing_to_wait_for

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

    def replace_delivery(self, delivery: Delivery, message: OutgoingMessage) -> bool:
        """Put ``message``, the engine's updated copy of ``delivery`` (a requeue, a retry due later), in the
        delivery's place in one step, keeping what the broker ties to the delivery (a server transport's
        caller waiting for the result); return True if done. The default returns False: the engine then
        publishes the copy and acks the original, as every broker that answers no caller directly wants."""
        return False

    def serve(self) -> Optional[str]:
        """Kinds with ``capabilities.needs_serving_consumer``: start accepting messages for this queue
        without the engine (the engine starts serving through ``run_consumer``); return the address it
        listens on, where it has one."""
        raise NotImplementedError(f"broker kind {self.kind!r} does not serve (needs_serving_consumer=False)")

    def sync_call(self, body: str, timeout: float) -> Any:
        """Request/response kinds (``capabilities.request_response``) run the function remotely."""
        raise NotImplementedError(f"broker kind {self.kind!r} does not support sync_call")

    # ----- helpers for subclasses -----
    def dead_letter_broker(self) -> "Broker":
        """The broker of ``<queue>_dlx`` (made once, from :meth:`dead_letter_target`)."""
        with self._dlx_lock:
            if self._dlx is None:
                cls, options = self.dead_letter_target()
                self._dlx = cls(dead_letter_queue_name(self.queue_name), options)
            return self._dlx

    def dead_letter_target(self) -> tuple[type["Broker"], Any]:
        """The broker class and options of ``<queue>_dlx``. Default: this kind with these options; a kind
        whose options name the queue's topic, routing or source overrides it."""
        return type(self), self.options


def nothing_to_wait_for() -> None:
    """The wait of a publish that already returned (``Broker.publish_begin``'s default; also what a plugin's
    ``publish_begin`` returns for a batch it had nothing to send for)."""


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}_dlx"


def annotate_dead_letter(body: Any, reason: str) -> str:
    """Add the dead-letter reason to a message body, as JSON text. Never raises and never drops the body:
    a body that is not a JSON object, or that cannot be parsed or written back (invalid UTF-8, nesting
    deeper than the JSON parser allows, values JSON cannot hold) is wrapped whole:
    ``{"raw_body": "<the text>", "extra": {"dead_letter_reason": ...}}``, or ``raw_body_base64`` when the
    bytes are not UTF-8 text. An ``extra`` that is not an object is kept as ``extra.invalid_extra``."""
    stamp = {"dead_letter_reason": reason, "dead_letter_time": round(time.time(), 4)}
    obj = _json_object_or_none(body)
    if obj is not None:
        old_extra = obj.get("extra")
        if isinstance(old_extra, dict):
            extra = dict(old_extra)
        else:
            extra = {} if old_extra is None else {"invalid_extra": old_extra}
        extra.update(stamp)
        obj = dict(obj)
        obj["extra"] = extra
        text = _dumps_utf8_or_none(obj)
        if text is not None:
            return text
    wrapped = _wrap_raw_body(body)
    wrapped["extra"] = stamp
    return json.dumps(wrapped, ensure_ascii=False)


def _json_object_or_none(body: Any) -> Optional[dict]:
    """The body as a dict, or None when it is not a JSON object the parser accepts (orjson refuses
    nesting deeper than 1024 with a ValueError; the guard on RecursionError is for any other parser)."""
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, (str, bytes)):
        return None
    try:
        obj = _json_loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _dumps_utf8_or_none(obj: dict) -> Optional[str]:
    """JSON text that any consumer can read back, or None. The stdlib encoder goes deeper than orjson's
    (255 levels) and raises RecursionError past the interpreter's limit; NaN/Infinity are refused because
    strict JSON readers reject them; the text must encode to UTF-8 (no lone surrogates)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=repr)
        text.encode("utf-8")
    except Exception:  # RecursionError, ValueError, UnicodeEncodeError, or whatever a repr() raised
        return None
    return text


def _wrap_raw_body(body: Any) -> dict[str, Any]:
    """The whole body, as text when it is text, else base64 (bytes that are not UTF-8, a str with lone
    surrogates), else the repr of an object."""
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if isinstance(body, bytes):
        try:
            return {"raw_body": body.decode("utf-8")}
        except UnicodeDecodeError:
            return {"raw_body_base64": base64.b64encode(body).decode("ascii")}
    if isinstance(body, str):
        try:
            body.encode("utf-8")
            return {"raw_body": body}
        except UnicodeEncodeError:
            return {"raw_body_base64": base64.b64encode(body.encode("utf-8", "surrogatepass")).decode("ascii")}
    try:
        text = repr(body)
    except Exception as exc:  # e.g. RecursionError for a dict nested too deep to print
        text = f"<{type(body).__name__} whose repr() failed: {type(exc).__name__}>"
    return {"raw_body": text.encode("utf-8", "backslashreplace").decode("utf-8")}
