"""Shared helpers for the scripts in ``bench/``: result lines, peak RSS, fresh-process parts, running the
original funboost 55.0 in its own virtualenv, repeated samples with a spread.

Every measured part runs in a fresh child process (so one part's threads, caches and memory never leak
into the next) and reports one line ``BENCHRESULT {json}`` on stdout, with the child's peak RSS added.
The line is written with ``os.write`` because the original funboost (nb_log) replaces ``print``.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable, Optional, Sequence

RESULT_TAG = "BENCHRESULT "
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# Where to look for the original funboost 55.0 (FUNBOOST_ORIG_PYTHON wins): the venv that
# ``python bench/run_all.py --setup-only`` creates.
ORIG_PYTHON_CANDIDATES = (os.path.join(BENCH_DIR, ".venvs", "orig", "bin", "python"),)


# ---------------------------------------------------------------- inside a child process
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def emit(result: dict[str, Any]) -> None:
    """Report a part's figures to the parent (adds ``rss_mb``)."""
    out = dict(result)
    out.setdefault("rss_mb", round(peak_rss_mb(), 1))
    os.write(1, ("\n" + RESULT_TAG + json.dumps(out) + "\n").encode())


def finish_child() -> None:
    """Leave at once: consumer threads are not daemons in the original funboost."""
    sys.stdout.flush()
    os._exit(0)


# ---------------------------------------------------------------- in the parent
def parse_result(stdout: str) -> Optional[dict]:
    for line in reversed(stdout.splitlines()):
        if RESULT_TAG in line:
            # strip any colour codes a patched print may have added
            return json.loads(line.split(RESULT_TAG, 1)[1].split("\x1b")[0].strip())
    return None


#: where the bench's child processes cache bytecode (never inside the checkout)
PYCACHE_DIR = os.path.join(tempfile.gettempdir(), "funboost-bench-pycache")


def scratch_env(d: str, **extra: str) -> dict[str, str]:
    """Environment for a child: data directories inside the scratch dir ``d`` (never the user's)."""
    env = dict(os.environ)
    env.update(FUNBOOST_DATA_DIR=os.path.join(d, "data"), FUNBOOST_SQLITE_DIR=os.path.join(d, "queues"),
               FUNBOOST_STATE_SQLITE_PATH=os.path.join(d, "data", "state.sqlite3"),
               FUNBOOST_LOG_TO_CONSOLE="0", PYTHONPYCACHEPREFIX=PYCACHE_DIR)
    # Bytecode is cached (outside the checkout, in PYCACHE_DIR) even where PYTHONDONTWRITEBYTECODE is set:
    # a pip-installed package (the original funboost in its venv) has its .pyc files from the install,
    # while an editable checkout without them compiles every module it imports again in every fresh
    # process (~17 ms of a consumer's start-up, timed inside the consume figures).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def run_part(script: str, name: str, *args: Any, python: Optional[str] = None,
             timeout: float = 1800) -> Optional[dict]:
    """Run ``python script --part name args...`` in a fresh process and a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="funboost-bench-") as d:
        cmd = [python or sys.executable, script, "--part", name, *map(str, args)]
        try:
            p = subprocess.run(cmd, cwd=d, env=scratch_env(d), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"part {name} {args} timed out after {timeout}s\n")
            return None
        res = parse_result(p.stdout)
        if res is None:
            sys.stderr.write(f"part {name} {args} failed (rc={p.returncode}):\n{p.stdout[-1500:]}\n"
                             f"{p.stderr[-3000:]}\n")
        return res


def find_original_python() -> Optional[str]:
    """The python of a virtualenv holding funboost==55.0, or None."""
    env = os.environ.get("FUNBOOST_ORIG_PYTHON")
    for cand in ([env] if env else []) + list(ORIG_PYTHON_CANDIDATES):
        if cand and os.path.exists(cand):
            try:
                v = subprocess.run([cand, "-c", "import importlib.metadata as m; print(m.version('funboost'))"],
                                   capture_output=True, text=True, timeout=60).stdout.strip()
            except Exception:
                continue
            if v == "55.0":
                return cand
    return None


def run_original(source: str, *args: Any, python: str, timeout: float = 1800) -> Optional[dict]:
    """Run a script (``source``) under the original funboost in a scratch directory.

    The original writes ``funboost_config.py`` and ``nb_log_config.py`` into what it takes for the project
    root (the cwd / first ``sys.path`` entry) and inspects the source of decorated functions, so the
    script is written into the scratch dir, which is also its cwd and PYTHONPATH."""
    with tempfile.TemporaryDirectory(prefix="funboost-orig-bench-") as d:
        script = os.path.join(d, "orig_part.py")
        with open(script, "w") as fh:
            fh.write(source)
        env = scratch_env(d, PYTHONPATH=d)
        try:
            p = subprocess.run([python, script, *map(str, args)], cwd=d, env=env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"original part {args} timed out after {timeout}s\n")
            return None
        res = parse_result(p.stdout)
        if res is None:
            sys.stderr.write(f"original part {args} failed (rc={p.returncode}):\n{p.stdout[-1500:]}\n"
                             f"{p.stderr[-3000:]}\n")
        return res


# ---------------------------------------------------------------- figures
class Samples:
    """Repeated measurements of one figure: mean ± half the range (the spread we actually saw)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.rss: list[float] = []

    def add(self, value: Optional[float], rss: Optional[float] = None) -> None:
        if value is not None:
            self.values.append(float(value))
        if rss is not None:
            self.rss.append(float(rss))

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        return (max(self.values) - min(self.values)) / 2 if len(self.values) > 1 else 0.0

    def fmt(self, unit: str = "msg/s", digits: int = 0) -> str:
        if not self.values:
            return "(not run)"
        pct = 100 * self.spread / self.mean if self.mean else 0.0
        s = f"{self.mean:>12,.{digits}f} ±{pct:3.0f}% {unit}"
        if self.rss:
            s += f"   peak RSS {max(self.rss):6.1f} MB"
        return s


def best_us_per_call(fn, count: int, per_call: int = 1, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``fn`` called ``count`` times, in µs per message (``per_call``
    messages per call)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / (count * per_call) * 1e6


def noop_booster(kind: str, queue: str, broker_config: dict, concurrency: int) -> Any:
    """A funboost booster of a no-op task on ``kind``, as the framework suites' funboost sides build it
    (memory state backend, no console log, no retries)."""
    from funboost import BoosterParams, boost

    def noop(x: int) -> None:
        pass
    return boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=broker_config,
                               concurrent_num=concurrency, state_backend="memory", log_to_console=False,
                               max_retry_times=0))(noop)


def alternate_push(plain: Any, ours: Any, per_round: int, rounds: int) -> dict[str, float]:
    """One-by-one push rates of two push callables (``push(i)``) in the same process, alternating: after one
    warm-up push each (``push(-1)``), each round pushes ``per_round`` messages with each side, the order
    flipped every round.

    Measured so because a framework push is a loopback round trip whose cost drifts by tens of percent
    within seconds on a shared host: two parts in separate processes, one after the other, compare two
    different moments. Returns the median rate and CPU µs per push of each side (``plain``, ``funboost``)
    and the median of the per-round ratios funboost / plain."""
    plain(-1)  # warm-up: connections made, queues declared, first-call caches filled
    ours(-1)
    rates: dict[str, list[float]] = {"plain": [], "funboost": []}
    cpus: dict[str, list[float]] = {"plain": [], "funboost": []}
    sides = [("plain", plain), ("funboost", ours)]
    for r in range(rounds):
        for name, push in (sides if r % 2 == 0 else sides[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(per_round):
                push(i)
            rates[name].append(per_round / (time.perf_counter() - t0))
            cpus[name].append((time.process_time() - c0) / per_round * 1e6)
    return {"plain": statistics.median(rates["plain"]), "funboost": statistics.median(rates["funboost"]),
            "plain_cpu_us": statistics.median(cpus["plain"]), "funboost_cpu_us": statistics.median(cpus["funboost"]),
            "ratio": statistics.median(o / p for o, p in zip(rates["funboost"], rates["plain"]))}


def ratio(a: Samples, b: Samples) -> Optional[float]:
    if not (a.ok and b.ok) or not b.mean:
        return None
    return a.mean / b.mean


def verdict(value: Optional[float], target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "MET" if met else "NOT MET"


def machine_info() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return (f"{os.cpu_count()} cpu ({model or platform.machine()}), python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, {load}")


def print_table(rows: Iterable[Sequence[str]], widths: Sequence[int]) -> None:
    for r in rows:
        print("  " + "".join(f"{c:<{w}}" for c, w in zip(r, widths)), flush=True)
