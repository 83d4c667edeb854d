"""Soak (issue 19, item 5): N tasks through one broker kind in a child process that publishes and consumes
at once (the backlog is held under ``--backlog`` so that RSS measures the engine, not a queue of millions),
sampling its own RSS, open file descriptors, threads and tasks done every second.

    python -m tests.reliability.soak --kind memory --tasks 1000000 --png docs/figures/soak-memory.png

prints a JSON summary (and writes it next to the PNG): throughput, RSS at the end of warm-up and its growth
after it, the spread of fds and threads after warm-up, and whether the leak check passed (RSS growth after
warm-up < 50 MB, fds and threads flat). scripts/soak.sh runs the full sizes; test_soak.py a reduced one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Optional

RSS_GROWTH_LIMIT_MB = 50.0
FLAT_SPREAD = 4  # fds / threads may wobble by this much after warm-up (pools breathing)


@dataclass
class SoakResult:
    kind: str
    tasks: int
    seconds: float
    tasks_per_second: float
    warmup_seconds: float
    rss_after_warmup_mb: float
    rss_growth_after_warmup_mb: float
    rss_max_mb: float
    fds_spread: int
    threads_spread: int
    leak_check_passed: bool
    samples: list[dict[str, float]]

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        return d


def _proc_status(pid: int) -> tuple[float, int, int]:
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd")), threads


def _child(kind: str, tasks: int, options: dict[str, Any], backlog: int, out_path: str, interval: float) -> None:
    """Runs in the child: consume and publish at once, write one sample line every ``interval`` seconds."""
    from funboost import BoosterParams, boost

    done = [0]
    lock = threading.Lock()
    queue = f"soak_{uuid.uuid4().hex[:10]}"

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=options, concurrent_num=32,
                         state_backend="memory", log_to_console=False, max_retry_times=0))
    def task(i: int) -> None:
        with lock:
            done[0] += 1

    task.consume()
    finished = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        with open(out_path, "w", buffering=1) as out:
            while True:
                rss, fds, threads = _proc_status(os.getpid())
                out.write(json.dumps({"t": round(time.monotonic() - t0, 2), "rss_mb": round(rss, 2), "fds": fds,
                                      "threads": threads, "done": done[0]}) + "\n")
                if finished.wait(interval):
                    rss, fds, threads = _proc_status(os.getpid())
                    out.write(json.dumps({"t": round(time.monotonic() - t0, 2), "rss_mb": round(rss, 2),
                                          "fds": fds, "threads": threads, "done": done[0]}) + "\n")
                    return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    published = 0
    batch = 1000
    while published < tasks:
        if published - done[0] > backlog:
            time.sleep(0.005)  # pacing the producer to the consumer (not synchronisation)
            continue
        n = min(batch, tasks - published)
        task.push_many(range(published, published + n))
        published += n
    while done[0] < tasks:
        time.sleep(0.01)
    finished.set()
    sampler.join()
    if kind.startswith("redis"):  # the shared server: take this run's keys away (its queue name is unique)
        import redis
        r = redis.Redis.from_url(options["url"])
        for key in r.scan_iter(f"*{queue}*", count=1000):
            r.delete(key)
    os._exit(0)  # the consumer's threads are not worth a graceful stop here


def run_soak(kind: str, tasks: int, options: Optional[dict[str, Any]] = None, backlog: int = 20000,
             timeout: float = 7200.0, warmup_fraction: float = 0.2, interval: float = 1.0) -> SoakResult:
    fd, out_path = tempfile.mkstemp(prefix=f"soak-{kind}-", suffix=".jsonl")
    os.close(fd)
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cmd = [sys.executable, "-m", "tests.reliability.soak", "--child", "--kind", kind, "--tasks", str(tasks),
               "--options", json.dumps(options or {}), "--backlog", str(backlog), "--out", out_path, "--interval", str(interval)]
        started = time.monotonic()
        r = subprocess.run(cmd, cwd=root, timeout=timeout, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"soak child for {kind} failed ({r.returncode}): {r.stderr[-2000:]}")
        seconds = time.monotonic() - started
        with open(out_path) as f:
            samples = [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(out_path)
    return analyse(kind, tasks, samples, seconds, warmup_fraction)


def analyse(kind: str, tasks: int, samples: list[dict[str, float]], seconds: float,
            warmup_fraction: float) -> SoakResult:
    """Warm-up: the first ``warmup_fraction`` of the tasks (caches, pools, allocator arenas fill up)."""
    warm = [s for s in samples if s["done"] >= tasks * warmup_fraction] or samples[-1:]
    base = warm[0]
    growth = max(s["rss_mb"] for s in warm) - base["rss_mb"]
    fds_spread = max(s["fds"] for s in warm) - min(s["fds"] for s in warm)
    threads_spread = max(s["threads"] for s in warm) - min(s["threads"] for s in warm)
    run_seconds = samples[-1]["t"] if samples else seconds
    return SoakResult(
        kind=kind, tasks=tasks, seconds=round(run_seconds, 1),
        tasks_per_second=round(tasks / run_seconds, 1) if run_seconds else 0.0,
        warmup_seconds=base["t"], rss_after_warmup_mb=base["rss_mb"], rss_growth_after_warmup_mb=round(growth, 1),
        rss_max_mb=max(s["rss_mb"] for s in samples), fds_spread=fds_spread, threads_spread=threads_spread,
        leak_check_passed=growth < RSS_GROWTH_LIMIT_MB and fds_spread <= FLAT_SPREAD and threads_spread <= FLAT_SPREAD,
        samples=samples)


def plot(results: list[SoakResult], png_path: str) -> None:
    """RSS, tasks/s, fds and threads over time, one line per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for r in results:
        t = [s["t"] for s in r.samples]
        axes[0].plot(t, [s["rss_mb"] for s in r.samples], label=f"{r.kind} ({r.tasks:,} tasks)")
        rate = [0.0] + [(b["done"] - a["done"]) / max(1e-9, b["t"] - a["t"]) for a, b in zip(r.samples, r.samples[1:])]
        axes[1].plot(t, rate, label=r.kind)
        axes[2].plot(t, [s["fds"] for s in r.samples], label=f"{r.kind} fds")
        axes[2].plot(t, [s["threads"] for s in r.samples], linestyle="--", label=f"{r.kind} threads")
        axes[0].axvline(r.warmup_seconds, color="grey", linewidth=0.5)
    axes[0].set_ylabel("RSS (MB)")
    axes[1].set_ylabel("tasks / s")
    axes[2].set_ylabel("open fds / threads")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_title("funboost soak: one process publishing and consuming (grey line: end of warm-up)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def default_options(kind: str, workdir: str) -> dict[str, Any]:
    if kind == "sqlite":
        return {"db_dir": workdir}
    if kind.startswith("redis"):
        return {"url": os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")}
    return {}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", action="append", required=True, help="broker kind (repeat for several)")
    ap.add_argument("--tasks", type=int, action="append", required=True, help="tasks per kind (same order)")
    ap.add_argument("--png", help="write the plot here")
    ap.add_argument("--backlog", type=int, default=20000)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.kind[0], args.tasks[0], json.loads(args.options), args.backlog, args.out, args.interval)
        return 0
    if len(args.kind) != len(args.tasks):
        ap.error("give one --tasks per --kind")
    results = []
    with tempfile.TemporaryDirectory(prefix="funboost-soak-") as workdir:
        for kind, n in zip(args.kind, args.tasks):
            r = run_soak(kind, n, default_options(kind, workdir), args.backlog, interval=args.interval)
            print(json.dumps(r.summary()), flush=True)
            results.append(r)
    if args.png:
        plot(results, args.png)
        with open(os.path.splitext(args.png)[0] + ".json", "w") as f:
            json.dump([r.summary() for r in results], f, indent=1)
    return 0 if all(r.leak_check_passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
