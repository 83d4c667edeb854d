"""CPU instructions per message through funboost (push, then consume), counted by valgrind's callgrind.

Wall-clock figures on this shared 2-core host swing by 2x when anything else runs; instruction counts do
not (callgrind counts instructions, not seconds). Each side runs the same script twice, with N and 2N
messages, and the difference divided by N is the per-message cost, free of the import and start-up cost.

    python bench/instructions_bench.py --python OLD_VENV/bin/python --python NEW_VENV/bin/python [--n 2000]

Prints, per interpreter: push and consume instructions per message on the memory and sqlite brokers.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

CHILD = r'''
import os, sys, threading, time
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")
from funboost import boost, BoosterParams
kind, n, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
done = []
lock = threading.Lock()
@boost(BoosterParams(queue_name="instr_" + kind + "_" + str(os.getpid()), broker_kind=kind, concurrent_num=8,
                     state_backend="memory", log_to_console=False))
def f(x):
    with lock:
        done.append(x)
for i in range(n):
    f.push(i)
if phase == "consume":
    f.consume()
    deadline = time.time() + 600
    while len(done) < n and time.time() < deadline:
        time.sleep(0.05)
    assert len(done) >= n, (len(done), n)
    f.stop_consume(30) if hasattr(f, "stop_consume") else None
os._exit(0)
'''


def callgrind_count(python: str, code: str, argv: list, workdir: str) -> int:
    """Instructions of ``python -c code *argv`` under callgrind (the whole process, all threads)."""
    out = os.path.join(workdir, "cg.out")
    env = dict(os.environ, FUNBOOST_DATA_DIR=workdir, FUNBOOST_NO_KEEPALIVE="1", FUNBOOST_NO_SIGNAL_HANDLERS="1")
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--cache-sim=no",
                        python, "-c", code, *argv], env=env, capture_output=True, text=True,
                       timeout=3600, cwd=workdir)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"{python} {argv}: rc={r.returncode}\n{r.stderr[-2000:]}")
    return int(m.group(1))


def instructions(python: str, kind: str, n: int, phase: str, workdir: str) -> int:
    return callgrind_count(python, CHILD, [kind, str(n), phase], workdir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", required=True, help="an interpreter with funboost installed")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--kinds", default="memory,sqlite")
    args = ap.parse_args()
    print(f"instructions per message (callgrind; per-message = (count(2N) - count(N)) / N, N = {args.n})")
    print(f"{'interpreter':60s} {'kind':8s} {'push':>12s} {'push+consume':>14s} {'consume':>12s}")
    for python in args.python:
        for kind in args.kinds.split(","):
            with tempfile.TemporaryDirectory() as d:
                per = {}
                for phase in ("push", "consume"):
                    a = instructions(python, kind, args.n, phase, d)
                    b = instructions(python, kind, 2 * args.n, phase, d)
                    per[phase] = (b - a) / args.n
                print(f"{python:60s} {kind:8s} {per['push']:12,.0f} {per['consume']:14,.0f} "
                      f"{per['consume'] - per['push']:12,.0f}", flush=True)


if __name__ == "__main__":
    main()
