"""funboost-otel across a real broker: the producer publishes in this process, a consumer in another
process runs the tasks; each process records with the SDK's InMemorySpanExporter, the consumer writes its
spans as JSON, and the test checks the trace context crossed the broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from funboost import BoosterParams, TaskOptions, boost

CONSUMER = textwrap.dedent('''
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from funboost import BoosterParams, boost
    queue, expected, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    @boost(BoosterParams(queue_name=queue, broker_kind="sqlite", state_backend="memory", max_retry_times=0,
                         log_to_console=False))
    def add(x, y):
        if x < 0:
            raise ValueError("negative")
        return x + y

    add.consume()
    deadline_ok = False
    import time
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if len([s for s in exporter.get_finished_spans() if s.name == f"process {queue}"]) >= expected:
            deadline_ok = True
            break
        time.sleep(0.05)
    add.stop_consume(10)

    def ctx(c):
        return {"trace_id": format(c.trace_id, "032x"), "span_id": format(c.span_id, "016x")}

    spans = [{"name": s.name, "kind": s.kind.name, "context": ctx(s.context),
              "parent": ctx(s.parent) if s.parent else None, "links": [ctx(l.context) for l in s.links],
              "attributes": dict(s.attributes), "status": s.status.status_code.name,
              "events": [e.name for e in s.events]} for s in exporter.get_finished_spans()]
    with open(out, "w") as f:
        json.dump({"complete": deadline_ok, "spans": spans}, f)
''')


@pytest.fixture(scope="module")
def exporter():
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    trace.set_tracer_provider(provider)
    return exp


def _hex(ctx) -> dict:
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def test_trace_context_crosses_the_broker_between_processes(exporter, tmp_path):
    queue = f"otel_{uuid.uuid4().hex[:10]}"
    os.environ["FUNBOOST_SQLITE_DIR"] = str(tmp_path / "sqlite")

    @boost(BoosterParams(queue_name=queue, broker_kind="sqlite", state_backend="memory", log_to_console=False))
    def add(x, y):
        return x + y

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request_span:
        ok = add.push(1, 2)
        failing = add.push(-1, 2)
    explicit_parent = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    given = add.publish({"x": 5, "y": 5}, task_options=TaskOptions(otel_context=explicit_parent))

    producers = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()
                 if s.kind == SpanKind.PRODUCER}
    assert set(producers) == {ok.task_id, failing.task_id, given.task_id}
    p = producers[ok.task_id]
    assert p.name == f"send {queue}"
    assert p.parent.span_id == request_span.get_span_context().span_id  # child of the caller's span
    assert dict(p.attributes) == {"messaging.system": "sqlite", "messaging.destination.name": queue,
                                  "messaging.operation.type": "send", "messaging.operation.name": "publish",
                                  "messaging.message.id": ok.task_id}
    assert format(producers[given.task_id].context.trace_id, "032x") == "ab" * 16  # the passed context

    out = tmp_path / "spans.json"
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    run = subprocess.run([sys.executable, str(script), queue, "3", str(out)], capture_output=True, text=True,
                         timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["complete"], data
    runs = {s["attributes"]["messaging.message.id"]: s for s in data["spans"] if s["kind"] == "CONSUMER"}
    assert set(runs) == set(producers)
    for task_id, producer in producers.items():
        consumer = runs[task_id]
        assert consumer["name"] == f"process {queue}"
        assert consumer["links"] == [_hex(producer.context)]  # linked to the producer span
        assert consumer["parent"] == _hex(producer.context)  # and in the same trace
        assert consumer["attributes"]["messaging.operation.type"] == "process"
        assert consumer["attributes"]["messaging.system"] == "sqlite"
        assert consumer["attributes"]["messaging.destination.name"] == queue
        assert consumer["attributes"]["funboost.attempt"] == 1
    assert runs[failing.task_id]["status"] == "ERROR" and "exception" in runs[failing.task_id]["events"]
    assert runs[ok.task_id]["status"] == "UNSET"


def test_async_mode_coroutine_runs_inside_its_consumer_span(exporter):
    """concurrent_mode="async": the attempt is awaited on the loop, so funboost_execute cannot wrap it;
    funboost_execute_context gives the coroutine its consumer span (current while it runs; errors recorded)."""
    import asyncio
    import time

    queue = f"otel_async_{uuid.uuid4().hex[:10]}"
    inner_parents: dict = {}

    @boost(BoosterParams(queue_name=queue, broker_kind="memory", state_backend="memory", concurrent_mode="async",
                         max_retry_times=0, log_to_console=False))
    async def work(x):
        await asyncio.sleep(0.01)
        with trace.get_tracer("test").start_as_current_span("inside") as inside:
            inner_parents[x] = inside.parent.span_id if inside.parent else None
        if x < 0:
            raise ValueError("negative")
        return x

    exporter.clear()
    ok, bad = work.push(1), work.push(-1)
    work.consume()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            runs = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()
                    if s.kind == SpanKind.CONSUMER and s.name == f"process {queue}"}
            if len(runs) == 2:
                break
            time.sleep(0.05)
        assert set(runs) == {ok.task_id, bad.task_id}
    finally:
        work.stop_consume(10)
    assert inner_parents[1] == runs[ok.task_id].context.span_id  # the coroutine ran inside its span
    assert inner_parents[-1] == runs[bad.task_id].context.span_id
    assert runs[ok.task_id].status.status_code == StatusCode.UNSET
    assert runs[bad.task_id].status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in runs[bad.task_id].events)
    producers = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()
                 if s.kind == SpanKind.PRODUCER}
    assert runs[ok.task_id].links[0].context.span_id == producers[ok.task_id].context.span_id
