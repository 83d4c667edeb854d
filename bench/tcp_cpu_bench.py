"""CPU per ``sync_call`` of the serving process and of the calling process (rusage), the tcp kind against
bench/tcp_bench.py's raw asyncio server + blocking-socket client, sequential (1 thread) and 8 threads.

    python bench/tcp_cpu_bench.py [--n 8000] [--threads 1,8] [--sides raw,tcp]

Each side gets a fresh server process (bench/tcp_bench.py ``--serve``); after 300 warm-up calls, ``--n``
calls are made from ``--threads`` threads, and the CPU time (user + system) both processes spent meanwhile
is divided by ``--n``. On the shared 2-core machine wall-clock rates swing by 2x with other work; CPU per
call moves much less, which makes before/after comparable (run it against an exported earlier tree with
``PYTHONPATH``, alternating, as bench/ab.py does).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tcp_bench  # noqa: E402
from _common import proc_cpu_seconds  # noqa: E402
from grpc_bench import throughput  # noqa: E402


def _switches_of(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far."""
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return vol, invol


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(side: str, threads: int, n: int) -> dict:
    port = tcp_bench.free_port()
    proc = tcp_bench.start("raw" if side == "raw" else "TCP", port, tcp_bench.QUEUE)
    try:
        if side == "raw":
            call = tcp_bench.RawClient(port).call
        else:
            booster = tcp_bench.make_booster("TCP", port, tcp_bench.QUEUE)
            call = lambda x, y: booster.sync_call(x, y, timeout=10)  # noqa: E731
        for i in range(300):
            call(i, 1)
        s0, c0, w0 = proc_cpu_seconds(proc.pid), _own_cpu(), _switches_of(proc.pid)
        rate = throughput(lambda i: call(i, 1), n, threads)
        s1, c1, w1 = proc_cpu_seconds(proc.pid), _own_cpu(), _switches_of(proc.pid)
        return {"side": side, "threads": threads, "calls_s": round(rate),
                "server_us": round((s1 - s0) / n * 1e6, 1), "client_us": round((c1 - c0) / n * 1e6, 1),
                "server_vcs": (w1[0] - w0[0]) / n, "server_ivcs": (w1[1] - w0[1]) / n}
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    import logging
    logging.disable(logging.INFO)
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--threads", default="1,8")
    ap.add_argument("--sides", default="raw,tcp")
    a = ap.parse_args()
    print(f"{'':32s} {'calls/s':>8s} {'server CPU us/call':>8s} {'client CPU us/call':>8s} "
          f"{'server switches/call (voluntary, involuntary)'}")
    for threads in (int(t) for t in a.threads.split(",")):
        for side in a.sides.split(","):
            r = measure(side, threads, a.n)
            # one row per side (bench/ab.py reads the rows: a name, then the numbers)
            print(f"{side + ' sync_call, ' + str(threads) + ' thread(s)':32s} {r['calls_s']:>8d} {r['server_us']:8.1f} "
                  f"{r['client_us']:8.1f} {r['server_vcs']:6.2f} {r['server_ivcs']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
