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

import json
import os
import sys
import threading
import uuid

from _common import RunCounter, best_of_rounds, framework_arguments, noop_booster, print_best, publish_then_drain

URL = os.environ.get("FUNBOOST_RQ_BENCH_REDIS", "redis://127.0.0.1:6379/0")

#: rq runs jobs by the import path of their function: the task body and its counter live at module level
_counter = RunCounter()


def noop(x: int) -> None:
    """The task body of both systems: count runs, note when the first started and the last ended."""
    _counter.hit()


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
    from rq import Queue

    EmbeddedWorker = embedded_worker_class()
    conn = Redis.from_url(URL)
    q = Queue(f"bench_plain_{uuid.uuid4().hex[:8]}", connection=conn)
    workers = []

    def start() -> None:
        workers.extend(EmbeddedWorker([q.name], connection=conn) for _ in range(conc))
        for w in workers:
            threading.Thread(target=w.work, kwargs={"burst": True, "logging_level": "WARNING"},
                             daemon=True).start()
    figures = publish_then_drain(lambda i: q.enqueue(noop, i, job_timeout=-1), start, _counter, n)
    _cleanup(q.name)
    return figures


def run_funboost(n: int, conc: int) -> dict:
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from funboost import BoosterParams, boost
    name = f"bench_fb_{uuid.uuid4().hex[:8]}"
    task = boost(BoosterParams(queue_name=name, broker_kind="RQ", broker_exclusive_config={"redis_url": URL},
                               concurrent_num=conc, state_backend="memory", log_to_console=False,
                               max_retry_times=0))(noop)
    figures = publish_then_drain(task.push, task.consume, _counter, n)
    task.stop_consume(10)
    _cleanup(name)
    return figures


def push_alternating(n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain ``Queue.enqueue`` and funboost's ``.push()`` alternating in this process, ``n // 2``
    per side and round (see ``_common.alternate_push``); both queues and their jobs are deleted."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push
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
    a = framework_arguments(3000)
    if a.part:
        # rq refuses functions of __main__: run the part from this file imported as a module
        import rq_bench as module
        fn = module.run_plain if a.part == "plain" else module.run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, {a.concurrency} SimpleWorker threads, best of {a.rounds} rounds; "
          f"rates in msg/s, CPU in µs per task (this process, all threads)")
    print(f"{'system':24} {'publish':>9} {'consume':>9} {'pub CPU':>9} {'cons CPU':>9}")
    best = best_of_rounds(a.rounds, ("plain", "funboost"), lambda part: [
        sys.executable, __file__, "--part", part, "--n", str(a.n), "--concurrency", str(a.concurrency)])
    print_best(best, (("plain", "plain rq .enqueue()"), ("funboost", "funboost RQ .push()")),
               ("publish", "consume", "publish_cpu_us", "consume_cpu_us"), 24, (9, 9, 9, 9))


if __name__ == "__main__":
    main()
