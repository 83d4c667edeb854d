"""funboost `tcp` kind vs a raw asyncio length-prefixed JSON server doing the same work, side by side in
one run (and the funboost `grpc` kind in the same table when funboost-grpc is installed).

Each server runs in its own process (as in production: publishers and consumers are different processes)
and the clients in this process:

* raw asyncio: ``asyncio.start_server``; each frame (the tcp kind's 9-byte header + JSON) is decoded with
  ``json``, add(x, y) runs in the loop, the reply ``{"success": true, "result": ...}`` is encoded and
  written. Its client is the leanest possible: a blocking socket per calling thread (no loop, no
  multiplexing), so the "raw" side pays for nothing the tcp kind adds.
* raw asyncio server, tcp kind's client: the same raw server, called through funboost-tcp's connection
  (its multiplexed leader/follower connection, no engine, no envelope): separates the client's cost from the server's.
* funboost tcp ``sync_call``: ``add.sync_call(x, y)`` against a consumer started with ``add.consume()``
  (the engine runs the call: task id, controls, status record), on one multiplexed connection.
* funboost grpc ``sync_call``: the same through the grpc kind.
* funboost tcp batched push: ``push_many`` of ``--push-n`` tasks in batches of 1,000 to a consumer that
  serves (``buffer_size`` large enough to hold them all) without running them: the transport's accept rate.

Latency: p50/p99 of sequential calls from one thread. Throughput: calls/s from ``--threads`` threads. Raw,
tcp (and grpc) are measured in turn for ``--rounds`` rounds (order flipped every round); printed are the
median of each figure and, as "vs raw", the median of the per-round ratios.

usage: python bench/tcp_bench.py [--n 2000] [--threads 8] [--rounds 5] [--push-n 200000]
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the measuring helpers of every transport bench
from grpc_bench import (add_booster, alternate_call_rounds, call_bench_parser, free_port,  # noqa: E402
                        measure_with_own_server, per_round_ratios, print_call_table, serve_booster, start_server)

QUEUE = f"bench_tcp_{uuid.uuid4().hex[:8]}"
HEADER = struct.Struct(">IIB")  # the tcp kind's frame header: length, request id, type


# ------------------------------------------------------------------ servers (each in a subprocess)
def raw_server(port: int) -> None:
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                n, rid, _ = HEADER.unpack(await reader.readexactly(9))
                kw = json.loads(await reader.readexactly(n))
                out = json.dumps({"success": True, "result": kw["x"] + kw["y"]}).encode()
                writer.write(HEADER.pack(len(out), rid, 128) + out)
        except asyncio.IncompleteReadError:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        print("READY", flush=True)
        async with server:
            await asyncio.sleep(900)

    asyncio.run(main())


def make_booster(kind: str, port: int, queue: str, buffer_size: int = 1000):
    return add_booster(kind, queue, {"port": port, "buffer_size": buffer_size})


def funboost_server(kind: str, port: int, queue: str) -> None:
    serve_booster(lambda: make_booster(kind, port, queue), 900)


def push_server(port: int, queue: str, buffer_size: int) -> None:
    """Serves the queue without running its tasks: what a batched push costs the transport."""
    import logging
    logging.disable(logging.INFO)
    from funboost_tcp import TcpBroker
    b = TcpBroker(queue, TcpBroker.parse_options({"port": port, "buffer_size": buffer_size}))
    b.serve()
    print("READY", flush=True)
    time.sleep(900)


def start(kind: str, port: int, queue: str, extra: str = "0") -> subprocess.Popen:
    return start_server(__file__, kind, "--port", str(port), "--queue", queue, "--push-n", extra)


class RawClient:
    """One blocking socket per calling thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def _sock(self) -> socket.socket:
        s = getattr(self.local, "sock", None)
        if s is None:
            s = self.local.sock = socket.create_connection(("127.0.0.1", self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.id = 0
        return s

    def _read(self, s: socket.socket, n: int) -> bytes:
        buf = s.recv(n)
        while len(buf) < n:
            more = s.recv(n - len(buf))
            if not more:
                raise ConnectionError("closed")
            buf += more
        return buf

    def call(self, x: int, y: int) -> int:
        s = self._sock()
        self.local.id += 1
        payload = json.dumps({"x": x, "y": y}).encode()
        s.sendall(HEADER.pack(len(payload), self.local.id, 2) + payload)
        n, rid, _ = HEADER.unpack(self._read(s, 9))
        assert rid == self.local.id
        return json.loads(self._read(s, n))["result"]


SIDES = {"raw": "raw asyncio length-prefixed JSON", "raw_tcp_client": "raw server, tcp kind's client",
         "TCP": "funboost tcp sync_call", "GRPC": "funboost grpc sync_call"}


def caller(side: str, port: int, queue: str):
    """``call(i)`` -> ``add(i, 1)`` for ``side`` (a key of SIDES) against the server on ``port``."""
    if side == "raw":
        raw = RawClient(port)
        return lambda i: raw.call(i, 1)
    if side == "raw_tcp_client":
        from funboost_tcp import TcpOptions
        from funboost_tcp import protocol as p
        from funboost_tcp.client import TcpClient
        conn = TcpClient(TcpOptions(port=port)).endpoints[0].conn

        def raw_via_tcp_client(i: int) -> int:
            frame_type, reply = conn.request(p.CALL, json.dumps({"x": i, "y": 1}).encode(), 10)
            return json.loads(reply)["result"]
        return raw_via_tcp_client
    booster = make_booster(side, port, queue)  # publisher side only: it does not consume
    return lambda i: booster.sync_call(i, 1, timeout=10)


def part_calls(side: str, n: int, threads: int) -> dict:
    """For run_all.py: one side (a key of SIDES) measured once in this process, against a server process
    of its own (grpc_bench.measure_with_own_server)."""
    queue = f"{QUEUE}_{side.lower()}"
    return measure_with_own_server(lambda port: start("raw" if side.startswith("raw") else side, port, queue),
                                   lambda port: caller(side, port, queue), n, threads)


def part_push(total: int) -> dict:
    """For run_all.py: batched ``push_many`` of ``total`` tasks, once (msg/s)."""
    import logging
    logging.disable(logging.INFO)
    return {"rate": push_bench(total, 1)[0]}


def push_bench(total: int, rounds: int) -> list[float]:
    port, queue = free_port(), f"{QUEUE}_push"
    proc = start("push", port, queue, str(total * (rounds + 1)))
    try:
        add = make_booster("TCP", port, queue)
        add.push_many(((i, 1) for i in range(1000)), batch_size=1000)  # warm-up: connection
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            add.push_many(((i, 1) for i in range(total)), batch_size=1000)
            rates.append(total / (time.perf_counter() - t0))
        size = add.broker.queue_size().ready
        assert size == total * rounds + 1000, size
        return rates
    finally:
        proc.kill()


def main() -> None:
    ap = call_bench_parser()
    ap.add_argument("--push-n", type=int, default=200_000)
    a = ap.parse_args()
    if a.serve == "raw":
        return raw_server(a.port)
    if a.serve == "push":
        return push_server(a.port, a.queue, a.push_n)
    if a.serve:
        return funboost_server(a.serve, a.port, a.queue)

    import logging
    logging.disable(logging.INFO)
    try:
        import funboost_grpc  # noqa: F401
        kinds = ["TCP", "GRPC"]
    except ImportError:
        kinds = ["TCP"]
    names = [SIDES[k] for k in ["raw", "raw_tcp_client"] + kinds]
    procs = []
    try:
        raw_port = free_port()
        procs.append(start("raw", raw_port, QUEUE))
        sides = [(SIDES[k], caller(k, raw_port, QUEUE)) for k in ("raw", "raw_tcp_client")]
        for kind in kinds:
            port, queue = free_port(), f"{QUEUE}_{kind.lower()}"
            procs.append(start(kind, port, queue))
            sides.append((SIDES[kind], caller(kind, port, queue)))
        for name, call in sides:
            assert call(1) == 2, name
        runs = alternate_call_rounds([(name, call, 0) for name, call in sides], a.rounds, a.n, a.threads)
    finally:
        for p in procs:
            p.kill()
    push_rates = push_bench(a.push_n, max(1, a.rounds // 2 + 1))

    med = statistics.median
    print(f"\nloopback, servers in their own processes, N={a.n} sequential + {a.n * 2} over {a.threads} threads, "
          f"{a.rounds} alternating round(s): medians; vs raw = median of per-round ratios")
    print_call_table(runs, names, cpu=False)
    per_round = " ".join(f"{x:.2f}" for x in per_round_ratios(runs, names[2], names[0]))
    print(f"tcp sync_call/raw throughput per round: {per_round}")
    print(f"funboost tcp push_many (batches of 1,000, {a.push_n:,} tasks): "
          f"{med(push_rates):,.0f} msg/s (rounds: {', '.join(f'{r:,.0f}' for r in push_rates)})")
    print("targets: sync_call p50 <= 1.2x, p99 <= 1.5x, 8-thread throughput >= 0.8x raw; push >= 50k msg/s batched")


if __name__ == "__main__":
    main()
