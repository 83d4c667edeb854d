"""Run one bench script alternately against two source trees ("before" and the working tree) and print the
median of every figure per tree: before/after figures from one session on a noisy machine.

The "before" tree is an export of an earlier commit (its core and plugin ``src`` folders go first on
``PYTHONPATH``, so they shadow the editable installs of the working tree), e.g.::

    mkdir /tmp/before && git archive <commit> core/src plugins bench | tar -x -C /tmp/before
    python bench/ab.py --before /tmp/before --runs 3 -- bench/tcp_bench.py --n 2000 --rounds 3

Figures are read from the bench's table rows (a name, then numbers; ratios end in "x"). Each run of the
bench measures its own raw baseline, so the "vs raw" ratios of different runs are comparable.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys

PUSH = re.compile(r"push_many .*?: ([\d,]+) msg/s")
ROW = re.compile(r"^(?P<name>[A-Za-z].*?)\s+(?P<nums>(?:[\d,.]+x?(?:\s+\+)?\s*){3,})$")


def rows(text: str) -> dict[str, list[float]]:
    out = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m and len(m["nums"].split()) >= 3:
            out[m["name"].strip()] = [float(v.rstrip("x").replace(",", "")) for v in m["nums"].split() if v != "+"]
        push = PUSH.search(line)
        if push:
            out["push_many msg/s"] = [float(push[1].replace(",", ""))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="root of the exported earlier tree")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- bench script and its arguments")
    a = ap.parse_args()
    script = [x for x in a.script if x != "--"]
    before_path = os.pathsep.join([os.path.join(a.before, "core", "src")]
                                  + sorted(glob.glob(os.path.join(a.before, "plugins", "*", "src"))))
    results: dict[str, list[dict[str, list[float]]]] = {"before": [], "after": []}
    for run in range(a.runs):
        for tree in (("before", "after") if run % 2 == 0 else ("after", "before")):
            env = dict(os.environ)
            if tree == "before":
                env["PYTHONPATH"] = before_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            done = subprocess.run([sys.executable, *script], env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{tree} run {run + 1} failed:\n{done.stderr[-2000:]}")
            print(f"--- {tree}, run {run + 1}\n{done.stdout.strip()}\n", flush=True)
            results[tree].append(rows(done.stdout))
    print(f"=== medians over {a.runs} run(s) per tree (alternating order)")
    for tree, runs in results.items():
        for name in runs[0]:
            cols = [r[name] for r in runs if name in r]
            med = [statistics.median(c[k] for c in cols) for k in range(min(len(c) for c in cols))]
            spread = [f"{min(c[k] for c in cols):g}-{max(c[k] for c in cols):g}" for k in range(len(med))]
            print(f"{tree:6s} {name:40s} " + "  ".join(f"{m:g} ({s})" for m, s in zip(med, spread)))


if __name__ == "__main__":
    main()
