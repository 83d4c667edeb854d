"""NATS benchmark: funboost-nats beside raw nats-py doing the same work with the same acks.

    python bench/nats_bench.py [--n 20000] [--repeat 2]
    python bench/_call.py nats_bench part_fb_js_publish '[20000]'   # one side, as run_all.py runs it

Parts (each in a fresh child process, peak RSS beside it): the ``part_*`` functions, each measuring one side
once and returning ``{"rate": msg/s}`` (``None`` with ``"ran"`` when not every message ran); each makes and
deletes its own uniquely named stream or subject.

* JetStream publish: raw = ``js.publish`` awaited together (512 PubAcks in flight, one per message);
  funboost = ``push_many`` on ``NATS_JETSTREAM`` (the same concurrent PubAcks, plus a Nats-Msg-Id header).
* JetStream consume: N messages waiting; raw = pull ``fetch(100)`` in a loop, a no-op per message, ``ack``
  each, one flush per batch; funboost = ``consume()`` of a no-op task (50 threads) to the last run.
* NATS core sync_call: round trips per second, raw ``nc.request`` to a responder vs ``sync_call`` to a
  consumer, both sequential (latency-bound).

Needs a nats-server with JetStream at FUNBOOST_NATS_URL (default nats://127.0.0.1:4222). Streams are made
with a bench prefix and deleted. Timings are noisy on a shared 2-core machine (±30 %).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any, Awaitable, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (RunCounter, compare_raw_and_funboost, machine_info, noop_booster,  # noqa: E402
                     part_functions, report_and_exit)

URL = os.environ.get("FUNBOOST_NATS_URL", "nats://127.0.0.1:4222")
BODY = json.dumps({"x": 1, "extra": {"task_id": "t" * 32, "publish_time": 1.0}}).encode()


async def _raw_stream(js, name: str) -> None:
    from nats.js.api import RetentionPolicy, StreamConfig
    await js.add_stream(StreamConfig(name=name, subjects=[name], retention=RetentionPolicy.WORK_QUEUE))


async def _raw_publish(js, subject: str, n: int) -> None:
    sem = asyncio.Semaphore(512)

    async def one() -> None:
        async with sem:
            await js.publish(subject, BODY)
    await asyncio.gather(*(one() for _ in range(n)))


def _unique(sep: str = "_") -> str:
    return f"bench{sep}{uuid.uuid4().hex[:10]}"


async def _with_raw_stream(measure: Callable[[Any, Any, str], Awaitable[float]]) -> float:
    """Connect, make a fresh work-queue stream, run ``await measure(nc, js, name)`` and always delete the
    stream again (a failed run leaves nothing on the server)."""
    import nats
    nc = await nats.connect(URL)
    js = nc.jetstream()
    name = _unique()
    try:
        await _raw_stream(js, name)
        try:
            return await measure(nc, js, name)
        finally:
            await js.delete_stream(name)
    finally:
        await nc.close()


def part_raw_js_publish(n: int) -> dict[str, Any]:
    async def measure(nc, js, name: str) -> float:
        t = time.perf_counter()
        await _raw_publish(js, name, n)
        return time.perf_counter() - t
    return {"rate": n / asyncio.run(_with_raw_stream(measure))}


def part_raw_js_consume(n: int) -> dict[str, Any]:
    from nats.js.api import AckPolicy, ConsumerConfig

    async def measure(nc, js, name: str) -> float:
        await _raw_publish(js, name, n)
        sub = await js.pull_subscribe(name, durable="bench", stream=name,
                                      config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1))
        done = 0
        t = time.perf_counter()
        while done < n:
            msgs = await sub.fetch(100, timeout=5)
            for m in msgs:
                json.loads(m.data)  # the same decode a task gets
                await m.ack()
            await nc.flush()
            done += len(msgs)
        return time.perf_counter() - t
    return {"rate": n / asyncio.run(_with_raw_stream(measure))}


def _booster(queue: str, kind: str, counter: RunCounter) -> Any:
    return noop_booster(kind, queue, {"url": URL}, 50, counter)


def part_fb_js_publish(n: int) -> dict[str, Any]:
    task = _booster(_unique(), "NATS_JETSTREAM", RunCounter(n))
    try:
        task.broker.queue_size()  # stream declared before timing, as in the raw part
        t = time.perf_counter()
        task.push_many(range(n))
        dt = time.perf_counter() - t
    finally:
        task.broker.delete_stream()
    return {"rate": n / dt}


def part_fb_js_consume(n: int) -> dict[str, Any]:
    counter = RunCounter(n)
    task = _booster(_unique(), "NATS_JETSTREAM", counter)
    rate: Optional[float] = None
    try:
        task.push_many(range(n))
        t = time.perf_counter()
        task.consume()
        if counter.wait(600):
            rate = n / (time.perf_counter() - t)
    finally:  # stopped before the stream goes, so the consumer does not fetch from a deleted stream
        task.stop_consume(10)
        task.broker.delete_stream()
    return {"rate": rate, "ran": counter.n}


def part_raw_core_request(n: int) -> dict[str, Any]:
    import nats

    async def main() -> float:
        nc = await nats.connect(URL)
        subject = _unique(".")

        async def respond(msg) -> None:
            kw = json.loads(msg.data)
            await nc.publish(msg.reply, json.dumps({"success": True, "result": kw["x"]}).encode())
        await nc.subscribe(subject, queue="bench", cb=respond)
        await nc.flush()
        t = time.perf_counter()
        for _ in range(n):
            await nc.request(subject, BODY, timeout=10)
        dt = time.perf_counter() - t
        await nc.close()
        return dt
    return {"rate": n / asyncio.run(main())}


def part_fb_core_sync_call(n: int) -> dict[str, Any]:
    task = _booster(_unique(), "NATS_CORE", RunCounter(n))
    task.consume()
    try:
        task.sync_call(0, timeout=10)  # warm
        t = time.perf_counter()
        for i in range(n):
            task.sync_call(i, timeout=10)
        dt = time.perf_counter() - t
    finally:
        task.stop_consume(10)
    return {"rate": n / dt}


PARTS = part_functions(globals())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    a, rest = ap.parse_known_args()
    if a.part:
        return report_and_exit(PARTS[a.part], int(rest[0]) if rest else a.n)
    print(f"# nats_bench: N={a.n}, sync_call rounds={a.calls}, {machine_info()}")
    rows = [("JetStream publish", "raw_js_publish", "fb_js_publish", a.n),
            ("JetStream consume", "raw_js_consume", "fb_js_consume", a.n),
            ("core request-reply (sequential)", "raw_core_request", "fb_core_sync_call", a.calls)]
    compare_raw_and_funboost(__file__, rows, a.repeat, "raw nats-py", ("ran", "ran"))


if __name__ == "__main__":
    main()
