"""funboost `grpc` kind vs a raw grpcio unary call doing the same work, side by side in one run.

Each side has its server in its own process (as in production: publishers and consumers are different
processes) and the clients in this process:

* raw grpcio: a unary call whose handler decodes the JSON arguments, runs add(x, y), encodes the result.
* funboost grpc ``sync_call``: ``add.sync_call(x, y)`` against a consumer started with ``add.consume()``.
* funboost grpc ``push``: fire-and-forget, returns once the consumer accepted the message.

Measures p50/p99 latency of sequential calls from one thread, and calls/s from 8 client threads; raw and\nfunboost alternate for ``--rounds`` rounds and the medians are printed (loopback figures are noisy).

usage: python bench/grpc_bench.py [--n 2000] [--threads 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent import futures

QUEUE = f"bench_grpc_{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ servers (run in a subprocess)
def raw_server(port: int) -> None:
    import grpc

    def add(request: bytes, context) -> bytes:
        kw = json.loads(request)
        return json.dumps({"success": True, "result": kw["x"] + kw["y"]}).encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Raw", {"Add": grpc.unary_unary_rpc_method_handler(add)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination(600)


def make_booster(port: int, queue: str = ""):
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue or QUEUE, broker_kind="grpc", broker_exclusive_config={"port": port},
                         concurrent_num=16, max_retry_times=0, state_backend="memory", log_to_console=False))
    def add(x: int, y: int) -> int:
        return x + y
    return add


def funboost_server(port: int) -> None:
    import logging
    logging.disable(logging.INFO)
    add = make_booster(port)
    add.consume()
    add.broker.serve()
    print("READY", flush=True)
    time.sleep(600)


def start(kind: str, port: int, queue: str = "") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), "--queue", queue or QUEUE],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        raise SystemExit(f"{kind} server did not start")
    return p


# ------------------------------------------------------------------ measures
def latency(call, n: int) -> tuple[float, float]:
    for i in range(min(200, n)):  # warm-up: connections, caches
        call(i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples[len(samples) // 2] * 1e3, samples[int(len(samples) * 0.99)] * 1e3


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), to see which side is the bottleneck."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(call, n: int, threads: int, server_pid: int = 0) -> float:
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(per):
            call(k * per + i)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    [t.start() for t in ts]
    barrier.wait()
    t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(server_pid) if server_pid else 0.0
    [t.join() for t in ts]
    done = per * threads
    elapsed = time.perf_counter() - t0
    CPU[0] = ((time.process_time() - c0) / done * 1e6,
              ((cpu_seconds(server_pid) - s0) / done * 1e6) if server_pid else 0.0)
    return done / elapsed


CPU: list = [(0.0, 0.0)]  # (client, server) CPU microseconds per call of the last throughput run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw/funboost rounds; medians are printed")
    ap.add_argument("--serve")
    ap.add_argument("--port", type=int)
    ap.add_argument("--queue")
    a = ap.parse_args()
    if a.serve:
        global QUEUE
        QUEUE = a.queue
        (raw_server if a.serve == "raw" else funboost_server)(a.port)
        return

    import grpc
    import logging
    import statistics
    logging.disable(logging.INFO)
    names = ("raw grpcio unary", "funboost grpc sync_call", "funboost grpc push (fire-and-forget)")
    runs: dict[str, list] = {n: [] for n in names}

    for rnd in range(a.rounds):  # raw and funboost alternate, so a noisy neighbour hits both sides alike
        raw_port = free_port()
        proc = start("raw", raw_port)
        try:
            ch = grpc.insecure_channel(f"127.0.0.1:{raw_port}")
            stub = ch.unary_unary("/bench.Raw/Add")

            def raw_call(i: int):
                return json.loads(stub(json.dumps({"x": i, "y": 1}).encode(), timeout=10))["result"]

            assert raw_call(1) == 2
            p50, p99 = latency(raw_call, a.n)
            tput = throughput(raw_call, a.n * 2, a.threads, proc.pid)
            runs[names[0]].append((p50, p99, tput) + CPU[0])
            ch.close()
        finally:
            proc.kill()

        fb_port, queue = free_port(), f"{QUEUE}_{rnd}"
        proc = start("funboost", fb_port, queue)
        try:
            add = make_booster(fb_port, queue)  # publisher side only: it does not consume

            def fb_call(i: int):
                return add.sync_call(i, 1, timeout=10)

            assert fb_call(1) == 2
            p50, p99 = latency(fb_call, a.n)
            tput = throughput(fb_call, a.n * 2, a.threads, proc.pid)
            runs[names[1]].append((p50, p99, tput) + CPU[0])

            push_p50, push_p99 = latency(lambda i: add.push(i, 1), a.n)
            push_tput = throughput(lambda i: add.push(i, 1), a.n * 2, a.threads, proc.pid)
            runs[names[2]].append((push_p50, push_p99, push_tput) + CPU[0])
        finally:
            proc.kill()

    # median of each figure over the rounds
    rows = [(n, *(statistics.median(r[k] for r in runs[n]) for k in range(3)),
             tuple(statistics.median(r[k] for r in runs[n]) for k in (3, 4))) for n in names]
    raw = rows[0]
    print(f"\nloopback, server in its own process, N={a.n} sequential + {a.n * 2} over {a.threads} threads, "
          f"median of {a.rounds} alternating round(s)")
    print(f"{'':38s} {'p50 ms':>7s} {'p99 ms':>7s} {'calls/s':>8s}  {'vs raw p50 p99 tput':>20s}  "
          f"CPU us/call client+server")
    for name, p50, p99, tput, (ccpu, scpu) in rows:
        print(f"{name:38s} {p50:7.3f} {p99:7.3f} {tput:8,.0f}  "
              f"{p50 / raw[1]:6.2f}x {p99 / raw[2]:5.2f}x {tput / raw[3]:5.2f}x  {ccpu:6.0f} + {scpu:4.0f}")
    print("targets for sync_call: p50 <= 1.2x, p99 <= 1.5x, throughput >= 0.8x raw")


if __name__ == "__main__":
    main()
