"""The hook implementations (registered as a module by funboost's plugin manager).

* ``funboost_before_publish``: starts a PRODUCER span ``send <queue>`` (child of the current context, or
  of a context the caller passed as ``TaskOptions(otel_context=...)``) and injects its context (W3C
  ``traceparent`` / ``tracestate`` through the global propagator) into the message as
  ``extra["otel_context"]``; ``funboost_after_publish`` ends it once the broker holds the message.
* ``funboost_execute`` (a wrapper around each run attempt) and ``funboost_execute_context`` (the same around
  an awaited attempt of a coroutine function in ``async`` mode): a CONSUMER span ``process <queue>``, child
  of the producer's context and linked to it, with the error recorded when the attempt raises.

Attributes follow the OpenTelemetry messaging semantic conventions: ``messaging.system`` (the broker
kind), ``messaging.destination.name``, ``messaging.operation.type`` / ``messaging.operation.name``,
``messaging.message.id`` (the task id), plus ``funboost.attempt`` on consumer spans.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from funboost.plugins.hookspecs import hookimpl

TRACER_NAME = "funboost_otel"
CARRIER_KEY = "otel_context"  # the message extra key (TaskOptions.otel_context)
MAX_OPEN_PRODUCER_SPANS = 10_000  # spans whose publish never completed (the broker raised) are ended at this bound

_open_lock = threading.Lock()
_open_spans: "collections.OrderedDict[str, trace.Span]" = collections.OrderedDict()
_systems: dict[str, str] = {}


def _tracer() -> trace.Tracer:
    # looked up per call: the application may set its tracer provider after funboost loaded the plugin
    return trace.get_tracer(TRACER_NAME)


def _messaging_system(queue_name: str) -> str:
    system = _systems.get(queue_name)
    if system is None:
        try:
            from funboost.booster import BoostersManager
            system = str(BoostersManager.get_booster(queue_name).params.broker_kind).lower()
        except Exception:  # a queue published to without a booster in this process
            system = "funboost"
        _systems[queue_name] = system
    return system


def _base_attributes(queue_name: str, task_id: str, operation_type: str, operation_name: str) -> dict[str, Any]:
    return {
        "messaging.system": _messaging_system(queue_name),
        "messaging.destination.name": queue_name,
        "messaging.operation.type": operation_type,
        "messaging.operation.name": operation_name,
        "messaging.message.id": task_id,
    }


@hookimpl
def funboost_before_publish(queue_name: str, message: dict) -> None:
    extra = message.setdefault("extra", {})
    task_id = str(extra.get("task_id", ""))
    given = extra.get(CARRIER_KEY)
    parent = propagate.extract(given) if isinstance(given, dict) else None  # None: the current context
    span = _tracer().start_span(f"send {queue_name}", context=parent, kind=SpanKind.PRODUCER,
                                attributes=_base_attributes(queue_name, task_id, "send", "publish"))
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    extra[CARRIER_KEY] = carrier
    if not span.is_recording():
        span.end()
        return
    with _open_lock:
        _open_spans[task_id] = span
        while len(_open_spans) > MAX_OPEN_PRODUCER_SPANS:
            _, stale = _open_spans.popitem(last=False)
            stale.set_status(Status(StatusCode.ERROR, "publish did not complete"))
            stale.end()


@hookimpl
def funboost_after_publish(queue_name: str, task_ids: Sequence[str]) -> None:
    with _open_lock:
        spans = [_open_spans.pop(str(t), None) for t in task_ids]
    for span in spans:
        if span is not None:
            span.end()


def _producer_context(extra: dict) -> Optional[trace.SpanContext]:
    carrier = extra.get(CARRIER_KEY)
    if not isinstance(carrier, dict):
        return None
    ctx = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


def _consumer_span(queue_name: str, task: Any) -> Any:
    """The CONSUMER span of one run attempt, as a context manager that makes it current."""
    extra = task.msg.extra
    task_id = str(extra.get("task_id", ""))
    producer = _producer_context(extra)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(producer)) if producer else otel_context.Context()
    attributes = _base_attributes(queue_name, task_id, "process", "process")
    from funboost.context import _current_task
    ctx = _current_task.get()
    if ctx is not None:
        attributes["funboost.attempt"] = int(getattr(ctx, "attempt", 0) or 0)
    return _tracer().start_as_current_span(f"process {queue_name}", context=parent, kind=SpanKind.CONSUMER,
                                           links=[Link(producer)] if producer else None, attributes=attributes,
                                           record_exception=True, set_status_on_exception=True)


@hookimpl(wrapper=True)
def funboost_execute(queue_name: str, task: Any, call: Any):
    with _consumer_span(queue_name, task):
        return (yield)


@hookimpl
def funboost_execute_context(queue_name: str, task: Any) -> Any:
    # coroutine functions in async mode: the engine enters this around the awaited attempt
    return _consumer_span(queue_name, task)
