"""funboost `http` kind vs raw uvicorn + the same client doing the same JSON work, side by side in one run
(and funboost `grpc` in the same table when funboost-grpc is installed).

Each server runs in its own process (as in production: publishers and consumers are different processes),
the clients in this process:

* raw uvicorn: a bare ASGI app, ``POST /add`` decodes the JSON arguments, runs add(x, y) and answers a JSON
  status; the client is the same urllib3 keep-alive pool the http kind uses. Same uvicorn configuration
  (httptools, auto loop) as the http kind.
* raw uvicorn, function in a thread: the same, but add() runs in the loop's default executor (a blocking
  function must leave the event loop; Starlette and FastAPI run a ``def`` endpoint that way). For context:
  funboost runs the user's function in a handler thread too.
* funboost http ``sync_call``: ``add.sync_call(x, y)`` against a consumer started with ``add.consume()``.
* funboost http ``push``: fire-and-forget, returns once the consumer accepted the message.
* funboost grpc ``sync_call`` (if installed), for comparison.

Measures p50/p99 latency of sequential calls from one thread, and calls/s from 8 client threads; all
servers run for the whole bench and the sides are measured in turn for ``--rounds`` rounds. Printed: the
median of each figure, and as "vs raw" the median of the per-round ratios against the raw uvicorn round.
Loopback figures on a shared host are noisy. The measuring helpers are grpc_bench's.

usage: python bench/http_bench.py [--n 2000] [--threads 8] [--rounds 5]
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_bench import (add_booster, alternate_call_rounds, call_bench_parser, free_port,  # noqa: E402
                        measure_with_own_server, per_round_ratios, print_call_table, serve_booster, start_server,
                        wait_drained)

QUEUE = f"bench_http_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ servers (each in a subprocess)
def _add(x: int, y: int) -> int:
    return x + y


async def raw_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    kw = json.loads(body)
    if scope["path"] == "/add_thread":  # a blocking function run off the loop, as Starlette/FastAPI run a def endpoint
        import asyncio
        result = await asyncio.get_running_loop().run_in_executor(None, _add, kw["x"], kw["y"])
    else:
        result = kw["x"] + kw["y"]
    out = json.dumps({"success": True, "result": result}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def raw_server(port: int) -> None:
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(raw_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                           access_log=False, server_header=False, date_header=False))
    import threading
    threading.Thread(target=lambda: (time.sleep(0.5), print("READY", flush=True)), daemon=True).start()
    server.run()


@functools.lru_cache(maxsize=None)  # one booster per queue and process: callers of several sides share it
def make_booster(kind: str, port: int, queue: str):
    return add_booster(kind, queue, {"port": port})


def funboost_server(kind: str, port: int, queue: str) -> None:
    serve_booster(lambda: make_booster(kind, port, queue), 900)


def start(kind: str, port: int) -> subprocess.Popen:
    return start_server(__file__, kind, "--port", str(port), "--queue", QUEUE)


SIDES = {"raw": "raw uvicorn + urllib3", "raw_thread": "raw uvicorn, function in a thread",
         "HTTP": "funboost http sync_call", "push": "funboost http push (fire-and-forget)"}


def caller(side: str, port: int):
    """``call(i)`` -> ``add(i, 1)`` for ``side`` (a key of SIDES) against the server on ``port``."""
    if side.startswith("raw"):
        import urllib3
        from funboost_http.client import OneWriteConnection
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=32, block=False, retries=False)
        pool.ConnectionCls = OneWriteConnection  # the same client as the http kind's: head + body in one write
        path = "/add_thread" if side == "raw_thread" else "/add"
        headers = {"content-type": "application/json"}

        def raw_call(i: int):
            r = pool.urlopen("POST", path, body=json.dumps({"x": i, "y": 1}).encode(), headers=headers,
                             retries=False, timeout=10)
            return json.loads(r.data)["result"]
        return raw_call
    add = make_booster("HTTP", port, QUEUE)  # publisher side only
    if side == "push":
        return lambda i: add.push(i, 1)
    return lambda i: add.sync_call(i, 1, timeout=10)


def part_calls(side: str, n: int, threads: int) -> dict:
    """For run_all.py: side "raw", "raw_thread" or "HTTP" measured once in this process, against a server
    process of its own (grpc_bench.measure_with_own_server)."""
    return measure_with_own_server(lambda port: start("raw" if side.startswith("raw") else "HTTP", port),
                                   lambda port: caller(side, port), n, threads)


def main() -> None:
    a = call_bench_parser().parse_args()
    if a.serve:
        if a.serve == "raw":
            raw_server(a.port)
        else:
            funboost_server(a.serve, a.port, a.queue)
        return

    import logging
    logging.disable(logging.INFO)
    import importlib.util
    with_grpc = importlib.util.find_spec("funboost_grpc") is not None

    raw_port, http_port, grpc_port = free_port(), free_port(), free_port()
    procs = {"raw": start("raw", raw_port), "http": start("HTTP", http_port)}
    if with_grpc:
        procs["grpc"] = start("GRPC", grpc_port)
    try:
        sides = [(SIDES[k], caller(k, raw_port if k.startswith("raw") else http_port),
                  procs["raw" if k.startswith("raw") else "http"].pid) for k in SIDES]
        push_call = sides[-1][1]
        add = make_booster("HTTP", http_port, QUEUE)
        if with_grpc:
            gadd = make_booster("GRPC", grpc_port, QUEUE)

            def grpc_call(i: int):
                return gadd.sync_call(i, 1, timeout=10)
            sides.append(("funboost grpc sync_call", grpc_call, procs["grpc"].pid))

        for name, call, _ in sides:
            if call is not push_call:
                assert call(1) == 2, name
        runs = alternate_call_rounds(sides, a.rounds, a.n, a.threads,
                                     lambda call: wait_drained(add) if call is push_call else None)
    finally:
        for p in procs.values():
            p.kill()

    names = [name for name, _, _ in sides]
    print(f"\nloopback, server in its own process, N={a.n} sequential + {a.n * 2} over {a.threads} threads, "
          f"{a.rounds} alternating round(s): medians; vs raw = median of per-round ratios")
    print_call_table(runs, names)
    p50, tput = (statistics.median(per_round_ratios(runs, "funboost http sync_call", names[1], k))
                 for k in ("p50", "calls"))
    print("http sync_call vs raw with the function in a thread: p50 %.2fx, throughput %.2fx" % (p50, tput))
    print("targets for http sync_call: p50 <= 1.2x raw, throughput >= 0.8x raw")

if __name__ == "__main__":
    main()
