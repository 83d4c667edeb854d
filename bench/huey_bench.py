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

import json
import os
import sys
import uuid

from _common import (RunCounter, best_of_rounds, framework_arguments, funboost_side, noop_booster, print_best,
                     publish_then_drain)

URL = os.environ.get("FUNBOOST_HUEY_BENCH_REDIS", "redis://127.0.0.1:6379/15")
CONSUMER = {"periodic": False, "initial_delay": 0.05, "max_delay": 1.0, "check_worker_health": False}


def run_plain(n: int, conc: int) -> dict:
    from huey import RedisHuey
    from huey.consumer import Consumer
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    huey = RedisHuey(q, url=URL, results=False, utc=True)
    counter = RunCounter()

    @huey.task(retries=0)
    def noop(x):
        counter.hit()

    consumer = None
    threads = []

    def start() -> None:  # made once the messages wait: its construction stays out of the publish figures
        nonlocal consumer
        consumer = Consumer(huey, workers=conc, worker_type="thread", **CONSUMER)
        threads.extend([consumer.scheduler] + [t for _, t in consumer.worker_threads])
        for t in threads:
            t.start()
    figures = publish_then_drain(noop, start, counter, n)
    consumer.stop_flag.set()
    for t in threads:
        t.join(10)
    huey.flush()
    return figures


def run_funboost(n: int, conc: int) -> dict:
    figures, noop = funboost_side("HUEY", f"bench_fb_{uuid.uuid4().hex[:8]}", {"redis_url": URL}, n, conc)
    noop.clear()
    return figures


def push_alternating(n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain huey's task call and funboost's ``.push()`` alternating in this process, ``n // 2``
    per side and round (see ``_common.alternate_push``); both queues are flushed."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push
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


def main() -> None:
    a = framework_arguments(5000)
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, huey thread workers {a.concurrency}, Redis {URL}, best of {a.rounds} rounds "
          f"(parts interleaved, each in a fresh process)")
    best = best_of_rounds(a.rounds, ("plain", "funboost"), lambda part: [
        sys.executable, __file__, "--part", part, "--n", str(a.n), "--concurrency", str(a.concurrency)])
    print(f"{'system':22} {'publish/s':>10} {'consume/s':>10} {'pub CPU µs':>11} {'cons CPU µs':>12}")
    print_best(best, (("plain", "plain huey task()"), ("funboost", "funboost HUEY .push()")),
               ("publish", "consume", "publish_cpu_us", "consume_cpu_us"), 22, (10, 10, 11, 12))


if __name__ == "__main__":
    main()
