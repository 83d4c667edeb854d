"""Two consume ratios of issue 24 (item 4), side by side in alternating rounds of fresh processes:

* crash-safe Redis consume (``redis_ack_able``, N waiting, 50 threads) against the original funboost 55.0's
  *unsafe* ``REDIS`` consume (``bench/redis_bench.py`` parts ``ours_consume`` and the original's script);
* the memory broker end to end (a warm consumer, push one by one until the last ran) against a bare
  ``ThreadPoolExecutor(50)`` (``bench/core_bench.py`` parts ``ours MEMORY_QUEUE`` and ``tpe``).

    python bench/consume_ratio_bench.py [--rounds 5] [--n 20000] [--python OTHER_VENV/bin/python ...]
                                        [--orig-python PATH] [--only redis|memory]

Each ``--python`` adds our side once more with that interpreter (e.g. a venv of an older commit, for a
before/after in the same run). Ratios are medians of the per-round ratios; "±" is half the range.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import run_part, scratch_env  # noqa: E402

import redis_bench  # noqa: E402


def _redis_ours(python: str, n: int) -> float | None:
    with tempfile.TemporaryDirectory(prefix="funboost-bench-") as d:
        p = subprocess.run([python, os.path.join(HERE, "redis_bench.py"), "--part", "ours_consume", str(n),
                            "redis_ack_able"], capture_output=True, text=True, timeout=900, env=scratch_env(d))
    res = redis_bench._parse(p)
    return res["rate"] if res else None


def _redis_orig(n: int) -> float | None:
    res = redis_bench.run_orig("consume", "REDIS", n)
    return res["rate"] if res else None


def _memory_ours(python: str, n: int) -> float | None:
    res = run_part(os.path.join(HERE, "core_bench.py"), "ours", "MEMORY_QUEUE", n, 50, python=python)
    return res["e2e"] if res else None


def _tpe(n: int) -> float | None:
    res = run_part(os.path.join(HERE, "core_bench.py"), "tpe", n, 50)
    return res["e2e"] if res else None


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    m = statistics.median(xs)
    return f"{m:>9,.0f} ±{(max(xs) - min(xs)) / 2 / m * 100:.0f}%"


def run(label: str, anchor_name: str, anchor, ours, pythons: list[str], rounds: int, n: int) -> None:
    names = [f"ours ({p})" for p in pythons]
    rates: dict[str, list[float]] = {anchor_name: [], **{k: [] for k in names}}
    ratios: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = [(anchor_name, lambda: anchor(n))] + [(k, (lambda p=p: ours(p, n))) for k, p in zip(names, pythons)]
        if r % 2:
            order.reverse()
        got = {}
        for name, fn in order:
            got[name] = fn()
            if got[name]:
                rates[name].append(got[name])
        for k in names:
            if got.get(k) and got.get(anchor_name):
                ratios[k].append(got[k] / got[anchor_name])
        print(f"  {label} round {r + 1}: " + ", ".join(f"{k} {v:,.0f}" if v else f"{k} failed"
                                                       for k, v in got.items()), flush=True)
    print(f"\n{label}, N = {n}, {rounds} alternating rounds (msg/s, median ± half range):")
    for name, xs in rates.items():
        print(f"  {name:<60} {_fmt(xs)}")
    for k in names:
        xs = ratios[k]
        print(f"  {k} / {anchor_name}: " + (f"{statistics.median(xs):.2f}x (rounds: "
                                          + " ".join(f"{x:.2f}" for x in xs) + ")" if xs else "n/a"))
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--python", action="append", default=[])
    # the original's venv that run_all.py --setup-only makes (bench/.venvs/orig), or FUNBOOST_ORIG_PYTHON
    ap.add_argument("--orig-python", default=os.environ.get("FUNBOOST_ORIG_PYTHON",
                                                            os.path.join(HERE, ".venvs", "orig", "bin", "python")))
    ap.add_argument("--only", choices=("redis", "memory"))
    a = ap.parse_args()
    pythons = a.python + [sys.executable]
    redis_bench.ORIG_PY = a.orig_python
    if a.only in (None, "redis"):
        run("redis consume", "original 55.0 REDIS (unsafe) consume", _redis_orig, _redis_ours, pythons, a.rounds, a.n)
    if a.only in (None, "memory"):
        run("memory end to end", "ThreadPoolExecutor(50) end to end", _tpe, _memory_ours, pythons, a.rounds, a.n)


if __name__ == "__main__":
    main()
