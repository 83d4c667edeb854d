"""Plain rq vs funboost on broker_kind="RQ", side by side, same Redis, same worker settings.

    .venv/bin/python bench/rq_bench.py [--n 3000] [--concurrency 8] [--rounds 2]

Plain rq: ``Queue.enqueue(noop, i)`` per message; worker = C rq ``SimpleWorker`` threads embedded in
the process (no signal handlers, no job timeout), the settings the RQ kind uses. funboost:
``@boost(... broker_kind="RQ", concurrent_num=C)`` + ``.push()`` / ``.consume()``. Each part runs in its
own subprocess. Consume rate: from the first job's start to the last job's end (worker start-up
excluded). CPU per task: this process's CPU time (all threads) during publishing / consuming, divided
by the number of tasks.
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

URL = os.environ.get("FUNBOOST_RQ_BENCH_REDIS", "redis://127.0.0.1:6379/0")

_state = {"n": 0, "done": 0, "first": 0.0, "last": 0.0}
_lock = threading.Lock()
_finished = threading.Event()


def noop(x: int) -> None:
    """The task body of both systems: count runs, note when the first started and the last ended."""
    with _lock:
        if _state["done"] == 0:
            _state["first"] = time.perf_counter()
        _state["done"] += 1
        if _state["done"] >= _state["n"]:
            _state["last"] = time.perf_counter()
            _finished.set()


def _timed_publish(publish, n: int) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n - 1):
        publish(i)
    return (n - 1) / (time.perf_counter() - t0), (time.process_time() - c0) / (n - 1)


def _timed_consume(start, n: int) -> tuple[float, float]:
    c0 = time.process_time()
    start()
    _finished.wait(600)
    cpu = (time.process_time() - c0) / n
    return (n - 1) / (_state["last"] - _state["first"]), cpu


def embedded_worker_class() -> type:
    """rq's SimpleWorker as an rq user embedding workers in threads of one process must write it (also used
    by framework_instructions_bench.py)."""
    from rq import SimpleWorker

    from funboost_rq.worker import NoDeathPenalty

    class EmbeddedWorker(SimpleWorker):
        death_penalty_class = NoDeathPenalty

        def _install_signal_handlers(self) -> None:
            pass

        def procline(self, message: str) -> None:
            pass

        def subscribe(self) -> None:
            pass

    return EmbeddedWorker


def run_plain(n: int, conc: int) -> dict:
    from redis import Redis
    from rq import Queue, SimpleWorker

    EmbeddedWorker = embedded_worker_class()
    conn = Redis.from_url(URL)
    q = Queue(f"bench_plain_{uuid.uuid4().hex[:8]}", connection=conn)
    _state["n"] = n
    q.enqueue(noop, -1, job_timeout=-1)  # warm the connection
    pub, pub_cpu = _timed_publish(lambda i: q.enqueue(noop, i, job_timeout=-1), n)
    workers = [EmbeddedWorker([q.name], connection=conn) for _ in range(conc)]

    def start() -> None:
        for w in workers:
            threading.Thread(target=w.work, kwargs={"burst": True, "logging_level": "WARNING"},
                             daemon=True).start()
    cons, cons_cpu = _timed_consume(start, n)
    _cleanup(q.name)
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu * 1e6}


def run_funboost(n: int, conc: int) -> dict:
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from funboost import BoosterParams, boost
    name = f"bench_fb_{uuid.uuid4().hex[:8]}"
    _state["n"] = n
    task = boost(BoosterParams(queue_name=name, broker_kind="RQ", broker_exclusive_config={"redis_url": URL},
                               concurrent_num=conc, state_backend="memory", log_to_console=False,
                               max_retry_times=0))(noop)
    task.push(-1)
    pub, pub_cpu = _timed_publish(task.push, n)
    cons, cons_cpu = _timed_consume(task.consume, n)
    task.stop_consume(10)
    _cleanup(name)
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu * 1e6}


def push_alternating(n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain ``Queue.enqueue`` and funboost's ``.push()`` alternating in this process, ``n // 2``
    per side and round (see ``_common.alternate_push``); both queues and their jobs are deleted."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push, noop_booster
    from redis import Redis
    from rq import Queue
    conn = Redis.from_url(URL)
    q = Queue(f"bench_plain_{uuid.uuid4().hex[:8]}", connection=conn)
    name = f"bench_fb_{uuid.uuid4().hex[:8]}"
    task = noop_booster("RQ", name, {"redis_url": URL}, conc)
    try:
        return alternate_push(lambda i: q.enqueue(noop, i, job_timeout=-1), task.push, max(100, n // 2), rounds)
    finally:
        _cleanup(q.name)
        _cleanup(name)


def _cleanup(name: str) -> None:
    from funboost_rq import RqBroker, RqOptions
    b = RqBroker(name, RqOptions(redis_url=URL))
    q = b.queue
    for reg in (q.started_job_registry, q.failed_job_registry, q.finished_job_registry):
        for job_id in reg.get_job_ids():
            b.conn.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
        b.conn.delete(reg.key)
    q.delete(delete_jobs=True)
    b.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        # rq refuses functions of __main__: run the part from this file imported as a module
        import rq_bench as module
        fn = module.run_plain if a.part == "plain" else module.run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, {a.concurrency} SimpleWorker threads, best of {a.rounds} rounds; "
          f"rates in msg/s, CPU in µs per task (this process, all threads)")
    print(f"{'system':24} {'publish':>9} {'consume':>9} {'pub CPU':>9} {'cons CPU':>9}")
    best: dict[str, dict] = {}
    for _ in range(a.rounds):
        for part in ("plain", "funboost"):
            out = subprocess.run([sys.executable, __file__, "--part", part, "--n", str(a.n),
                                  "--concurrency", str(a.concurrency)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:])
                raise SystemExit(1)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            b = best.setdefault(part, {})
            for k in ("publish", "consume"):
                b[k] = max(b.get(k, 0.0), r[k])
            for k in ("publish_cpu_us", "consume_cpu_us"):
                b[k] = min(b.get(k, float("inf")), r[k])
    for part, label in (("plain", "plain rq .enqueue()"), ("funboost", "funboost RQ .push()")):
        b = best[part]
        print(f"{label:24} {b['publish']:9.0f} {b['consume']:9.0f} {b['publish_cpu_us']:9.0f} {b['consume_cpu_us']:9.0f}")
    p, f = best["plain"], best["funboost"]
    print(f"{'funboost / plain':24} {f['publish'] / p['publish']:9.2f} {f['consume'] / p['consume']:9.2f} "
          f"{f['publish_cpu_us'] / p['publish_cpu_us']:9.2f} {f['consume_cpu_us'] / p['consume_cpu_us']:9.2f}")


if __name__ == "__main__":
    main()
