"""Plain huey vs funboost on broker_kind="HUEY", side by side, same Redis, same worker settings.

    python bench/huey_bench.py [--n 5000] [--concurrency 8] [--rounds 2]

Plain huey: ``RedisHuey`` + ``@huey.task()`` + calling the task (huey's enqueue); worker = huey's
``Consumer`` with ``worker_type="thread"`` and C workers, started in the process. funboost:
``@boost(... broker_kind="HUEY")`` + ``.push()`` / ``.consume()`` (huey's Consumer with the same
settings, plus funboost's runner and the in-flight bookkeeping that makes a SIGKILL lose nothing).
Each part runs in its own subprocess. Publish rate: N enqueues one by one. Consume rate: from the
first task's start to the last task's end (worker start-up excluded). CPU per task: the process's
CPU time (user + system, all threads) over that phase divided by N; Redis's own CPU is not included.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid

URL = os.environ.get("FUNBOOST_HUEY_BENCH_REDIS", "redis://127.0.0.1:6379/15")
CONSUMER = {"periodic": False, "initial_delay": 0.05, "max_delay": 1.0, "check_worker_health": False}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_plain(n: int, conc: int) -> dict:
    from huey import RedisHuey
    from huey.consumer import Consumer
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    huey = RedisHuey(q, url=URL, results=False, utc=True)
    done, first, finished, noop_body = _counter(n)

    @huey.task(retries=0)
    def noop(x):
        noop_body()

    noop(-1)  # warm the connection
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(n - 1):
        noop(i)
    pub_s, pub_cpu = time.perf_counter() - t0, _cpu() - c0
    consumer = Consumer(huey, workers=conc, worker_type="thread", **CONSUMER)
    c0 = _cpu()
    threads = [consumer.scheduler] + [t for _, t in consumer.worker_threads]
    for t in threads:
        t.start()
    finished.wait(600)
    cons_cpu = _cpu() - c0
    consumer.stop_flag.set()
    for t in threads:
        t.join(10)
    huey.flush()
    return _figures(n, pub_s, pub_cpu, done, first, cons_cpu)


def run_funboost(n: int, conc: int) -> dict:
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from funboost import BoosterParams, boost
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    done, first, finished, noop_body = _counter(n)

    @boost(BoosterParams(queue_name=q, broker_kind="HUEY", broker_exclusive_config={"redis_url": URL},
                         concurrent_num=conc, state_backend="memory", log_to_console=False, max_retry_times=0))
    def noop(x):
        noop_body()

    noop.push(-1)
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(n - 1):
        noop.push(i)
    pub_s, pub_cpu = time.perf_counter() - t0, _cpu() - c0
    c0 = _cpu()
    noop.consume()
    finished.wait(600)
    cons_cpu = _cpu() - c0
    noop.stop_consume(10)
    noop.clear()
    return _figures(n, pub_s, pub_cpu, done, first, cons_cpu)


def push_alternating(n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain huey's task call and funboost's ``.push()`` alternating in this process, ``n // 2``
    per side and round (see ``_common.alternate_push``); both queues are flushed."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push, noop_booster
    from huey import RedisHuey
    huey = RedisHuey(f"bench_plain_{uuid.uuid4().hex[:8]}", url=URL, results=False, utc=True)

    @huey.task(retries=0)
    def plain(x):
        pass

    ours = noop_booster("HUEY", f"bench_fb_{uuid.uuid4().hex[:8]}", {"redis_url": URL}, conc)
    try:
        return alternate_push(plain, ours.push, max(100, n // 2), rounds)
    finally:
        huey.flush()
        ours.clear()


def _figures(n: int, pub_s: float, pub_cpu: float, done: list, first: list, cons_cpu: float) -> dict:
    return {"publish": (n - 1) / pub_s, "consume": (n - 1) / (done[1] - first[0]),
            "publish_cpu_us": 1e6 * pub_cpu / (n - 1), "consume_cpu_us": 1e6 * cons_cpu / n}


def _counter(n: int):
    """A task body that counts runs and notes when the first started and the last ended."""
    done = [0, 0.0]
    first = [0.0]
    lock = threading.Lock()
    finished = threading.Event()

    def body() -> None:
        with lock:
            if done[0] == 0:
                first[0] = time.perf_counter()
            done[0] += 1
            if done[0] >= n:
                done[1] = time.perf_counter()
                finished.set()
    return done, first, finished, body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, huey thread workers {a.concurrency}, Redis {URL}, best of {a.rounds} rounds "
          f"(parts interleaved, each in a fresh process)")
    best: dict[str, dict] = {}
    for _ in range(a.rounds):
        for part in ("plain", "funboost"):
            out = subprocess.run([sys.executable, __file__, "--part", part, "--n", str(a.n),
                                  "--concurrency", str(a.concurrency)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:])
                raise SystemExit(1)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            b = best.setdefault(part, {"publish": 0.0, "consume": 0.0, "publish_cpu_us": float("inf"),
                                       "consume_cpu_us": float("inf")})
            for k in ("publish", "consume"):
                b[k] = max(b[k], r[k])
            for k in ("publish_cpu_us", "consume_cpu_us"):
                b[k] = min(b[k], r[k])
    print(f"{'system':22} {'publish/s':>10} {'consume/s':>10} {'pub CPU µs':>11} {'cons CPU µs':>12}")
    for part, label in (("plain", "plain huey task()"), ("funboost", "funboost HUEY .push()")):
        b = best[part]
        print(f"{label:22} {b['publish']:10.0f} {b['consume']:10.0f} {b['publish_cpu_us']:11.0f} "
              f"{b['consume_cpu_us']:12.0f}")
    p, f = best["plain"], best["funboost"]
    print(f"{'funboost / plain':22} {f['publish'] / p['publish']:10.2f} {f['consume'] / p['consume']:10.2f} "
          f"{f['publish_cpu_us'] / p['publish_cpu_us']:11.2f} {f['consume_cpu_us'] / p['consume_cpu_us']:12.2f}")


if __name__ == "__main__":
    main()
