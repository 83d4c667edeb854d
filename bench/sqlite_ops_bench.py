"""The sqlite broker's own operations, without the engine: queue_size() against backlog size, and the cost
per message of publish (one by one, batches of 1000) and fetch(100)+ack, in wall-clock time and in CPU
instructions (valgrind's callgrind: stable on a loaded machine, unlike seconds).

    python bench/sqlite_ops_bench.py [--src NAME=DIR ...] [--backlogs 1000,100000,1000000] [--wall] [--callgrind N]

``--src NAME=DIR`` runs the measurements with ``funboost_sqlite`` imported from DIR (a checkout's
``plugins/funboost-sqlite/src``), so two versions compare side by side with one interpreter (funboost core
must be installed in it); default: the installed funboost_sqlite. Callgrind counts user-space instructions
only: the kernel's share (the WAL writes) is in the wall-clock figures, not in the instruction counts.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

# one child process per measurement; argv: op backlog n; prints a JSON dict
CHILD = r'''
import json, os, sys, tempfile, time
from funboost.plugins.broker import OutgoingMessage
from funboost_sqlite import SqliteBroker
op, backlog, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp(prefix="sqlite-ops-")
b = SqliteBroker("ops", SqliteBroker.parse_options({"db_dir": d}))
body = json.dumps({"x": 1, "extra": {"task_id": "t"}})
def fill(k):
    for s in range(0, k, 1000):
        b.publish([OutgoingMessage(body=body) for _ in range(min(1000, k - s))])
out = {}
t = time.perf_counter()
fill(backlog)
out["fill_per_s"] = backlog / (time.perf_counter() - t) if backlog else None
if op == "wall":
    qs = []
    for _ in range(20):
        t = time.perf_counter(); size = b.queue_size(); qs.append((time.perf_counter() - t) * 1e3)
    assert size.ready == backlog, size
    out["queue_size_ms"] = sorted(qs)[len(qs) // 2]
    one = [OutgoingMessage(body=body)]
    t = time.perf_counter()
    for _ in range(n):
        b.publish(one)
    out["publish1_us"] = (time.perf_counter() - t) / n * 1e6
    batch = [OutgoingMessage(body=body) for _ in range(1000)]
    t = time.perf_counter()
    for _ in range(max(1, n // 1000)):
        b.publish(batch)
    out["publish1000_us"] = (time.perf_counter() - t) / (max(1, n // 1000) * 1000) * 1e6
    got = 0
    t = time.perf_counter()
    while got < n:
        ds = b.fetch(100, 1.0); b.ack(ds); got += len(ds)
    out["fetch_ack_us"] = (time.perf_counter() - t) / got * 1e6
elif op == "publish1":
    one = [OutgoingMessage(body=body)]
    for _ in range(n):
        b.publish(one)
elif op == "publish1000":
    batch = [OutgoingMessage(body=body) for _ in range(1000)]
    for _ in range(n // 1000):
        b.publish(batch)
elif op == "fetch_ack":  # the same fill in the N and 2N runs: only the fetch+acks differ
    fill(int(sys.argv[4]))
    got = 0
    while got < n:
        ds = b.fetch(100, 1.0); b.ack(ds); got += len(ds)
elif op == "queue_size":
    for _ in range(n):
        b.queue_size()
print(json.dumps(out))
b.close()
os._exit(0)
'''


def child_env(src: str | None) -> dict:
    env = dict(os.environ, FUNBOOST_NO_KEEPALIVE="1", FUNBOOST_NO_SIGNAL_HANDLERS="1", FUNBOOST_LOG_TO_CONSOLE="0")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_wall(src: str | None, backlog: int, n: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, "wall", str(backlog), str(n)], env=child_env(src),
                       capture_output=True, text=True, timeout=3600)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def instructions(src: str | None, args: list[str]) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--cache-sim=no",
                            sys.executable, "-c", CHILD, *args], env=child_env(src), capture_output=True,
                           text=True, timeout=3600, cwd=d)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError(f"{args}: rc={r.returncode}\n{r.stderr[-2000:]}")
    return int(m.group(1))


def per_message(src: str | None, op: str, n: int, backlog: int = 0) -> float:
    """(instructions with 2N - instructions with N) / N: free of start-up and fill costs."""
    extra = [str(3 * n + 1000)] if op == "fetch_ack" else []
    a = instructions(src, [op, str(backlog), str(n), *extra])
    b = instructions(src, [op, str(backlog), str(2 * n), *extra])
    return (b - a) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", default=[], help="NAME=DIR of a funboost_sqlite to import")
    ap.add_argument("--backlogs", default="1000,100000,1000000")
    ap.add_argument("--n", type=int, default=2000, help="messages per wall-clock probe")
    ap.add_argument("--rounds", type=int, default=3, help="wall-clock rounds (medians are printed)")
    ap.add_argument("--wall", action="store_true", help="the wall-clock table")
    ap.add_argument("--callgrind", type=int, default=0, metavar="N", help="instructions per message, N and 2N")
    a = ap.parse_args()
    srcs = [tuple(s.split("=", 1)) for s in a.src] or [("installed", None)]
    if a.wall:
        print("wall clock (medians of rounds; rounds alternate between the versions)")
        print(f"{'version':12s} {'backlog':>10s} {'fill/s':>9s} {'queue_size ms':>14s} {'publish 1 µs':>13s} "
              f"{'publish 1000 µs/msg':>20s} {'fetch100+ack µs/msg':>20s}")
        for backlog in (int(x) for x in a.backlogs.split(",")):
            res: dict = {name: [] for name, _ in srcs}
            for _ in range(a.rounds):
                for name, src in srcs:
                    res[name].append(run_wall(src, backlog, a.n))
            for name, _ in srcs:
                m = {k: statistics.median(r[k] for r in res[name]) for k in res[name][0]}
                print(f"{name:12s} {backlog:>10,} {m['fill_per_s']:>9,.0f} {m['queue_size_ms']:>14.3f} "
                      f"{m['publish1_us']:>13.1f} {m['publish1000_us']:>20.2f} {m['fetch_ack_us']:>20.2f}", flush=True)
    if a.callgrind:
        n = max(1000, a.callgrind // 1000 * 1000)
        print(f"instructions per message (callgrind, (count(2N) - count(N)) / N, N = {n}; queue_size: per call "
              f"with 100,000 waiting)")
        print(f"{'version':12s} {'publish 1':>12s} {'publish 1000':>13s} {'fetch100+ack':>13s} {'queue_size':>12s}")
        for name, src in srcs:
            row = [per_message(src, op, n) for op in ("publish1", "publish1000", "fetch_ack")]
            row.append(per_message(src, "queue_size", 20, backlog=100_000))
            print(f"{name:12s} {row[0]:>12,.0f} {row[1]:>13,.0f} {row[2]:>13,.0f} {row[3]:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
