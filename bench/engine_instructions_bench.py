"""Instructions per message of the engine's two hot entry points alone, counted by valgrind's callgrind:
``Booster.push`` on the memory broker, and ``Consumer.execute_inline`` (a warm memory-broker consumer, one
thread, the way a foreign worker or the tcp kind's server calls it).

    python bench/engine_instructions_bench.py [--python OTHER_VENV/bin/python ...] [--n 4000]

Each case runs twice, with N and 2N messages; (count(2N) - count(N)) / N is the per-message cost, free of
import and start-up. Instruction counts do not swing with the shared host's load as wall clock does.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from instructions_bench import callgrind_count  # noqa: E402

CHILD = r'''
import os, sys
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")
from funboost import boost, BoosterParams
from funboost.message import build_envelope, dumps
from funboost.plugins.broker import Delivery
case, n = sys.argv[1], int(sys.argv[2])
@boost(BoosterParams(queue_name="einstr_" + str(os.getpid()), broker_kind="MEMORY", concurrent_num=1,
                     state_backend="memory", log_to_console=False))
def f(x, y=1):
    return x + y
if case == "push":
    for i in range(n):
        f.push(i, y=2)
else:
    from funboost.engine.consumer import Consumer
    c = Consumer(f.consumer_setup())
    bodies = [dumps(build_envelope({"x": i, "y": 2})) for i in range(n)]
    run = c.execute_inline
    for b in bodies:
        st = run(Delivery(body=b, auto_ack=True))
    assert st.success and st.result == n + 1, st
os._exit(0)
'''


def instructions(python: str, case: str, n: int, workdir: str) -> int:
    return callgrind_count(python, CHILD, [case, str(n)], workdir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="an interpreter with funboost installed (default: this one)")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--cases", default="push,execute_inline")
    args = ap.parse_args()
    print(f"instructions per message (callgrind; (count(2N) - count(N)) / N, N = {args.n})")
    for python in args.python or [sys.executable]:
        for case in args.cases.split(","):
            with tempfile.TemporaryDirectory() as d:
                a = instructions(python, case, args.n, d)
                b = instructions(python, case, 2 * args.n, d)
            print(f"{python:50s} {case:16s} {(b - a) / args.n:12,.0f}", flush=True)


if __name__ == "__main__":
    main()
