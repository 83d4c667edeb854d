"""Instructions per consumed task (valgrind's callgrind), a framework plain against funboost on that kind.

    python bench/framework_instructions_bench.py --kind huey [--n1 100 --n2 500] [--parts plain,funboost]
    python bench/framework_instructions_bench.py --kind dramatiq --url amqp://guest:guest@127.0.0.1:5672/%2F \
        [--parts plain,plain-kind,funboost]   # plain: dramatiq's default middleware; plain-kind: the kind's two
    python bench/framework_instructions_bench.py --kind rq

Wall-clock rates on the shared 2-core machine swing by 2x with other work; instruction counts do not.
For each part and each N of (n1, n2): N no-op tasks are published by a process outside valgrind, then a
consumer process runs under ``valgrind --tool=callgrind --instr-atstart=no``: it imports and builds
everything, says READY, and the driver switches instrumentation on (``callgrind_control -i on``) just
before the consumer starts (huey's ``Consumer`` threads / dramatiq's ``Worker``, or the booster's
``consume()``); the process exits at once after the N-th task. (count(n2) - count(n1)) / (n2 - n1) is the
cost per task without the consumer's start-up. Same settings as bench/huey_bench.py and
bench/dramatiq_bench.py / bench/rq_bench.py: 8 worker threads, funboost with the memory state backend and no retries.
Work that depends on wall time (the scheduler's and heartbeat ticks) is counted too, but is small beside
the tasks. Needs valgrind and the kind's plugin installed; takes minutes (valgrind runs ~50x slower).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

DEFAULT_URLS = {"huey": os.environ.get("FUNBOOST_HUEY_BENCH_REDIS", "redis://127.0.0.1:6379/15"),
                "dramatiq": os.environ.get("FUNBOOST_DRAMATIQ_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F"),
                "rq": os.environ.get("FUNBOOST_RQ_BENCH_REDIS", "redis://127.0.0.1:6379/14")}
CONCURRENCY = 8


def _counter(n: int) -> tuple[threading.Event, Any]:
    done = [0]
    lock = threading.Lock()
    finished = threading.Event()

    def body() -> None:
        with lock:
            done[0] += 1
            if done[0] >= n:
                finished.set()
    return finished, body


_rq_body: list = []  # plain rq: the job function below counts through the body set here


def rq_noop(x: int) -> None:
    """The plain rq job (rq imports it by path: ``framework_instructions_bench.rq_noop``)."""
    _rq_body[0]()


def _make(kind: str, part: str, url: str, queue: str, n: int) -> tuple[Any, Any, threading.Event]:
    """(framework handle, the task / booster, finished event)."""
    finished, body = _counter(n)
    if part == "funboost":
        os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
        from funboost import BoosterParams, boost
        cfg = {"redis_url": url} if kind in ("huey", "rq") else {"broker_url": url}

        def noop(x: int) -> None:
            body()

        booster = boost(BoosterParams(queue_name=queue, broker_kind=kind.upper(), broker_exclusive_config=cfg,
                                      concurrent_num=CONCURRENCY, state_backend="memory", log_to_console=False,
                                      max_retry_times=0))(noop)
        return None, booster, finished
    if kind == "huey":
        from huey import RedisHuey
        huey = RedisHuey(queue, url=url, results=False, utc=True)

        @huey.task(retries=0, name="noop")
        def task(x: int) -> None:
            body()
        return huey, task, finished
    if kind == "rq":
        from redis import Redis
        from rq import Queue
        import framework_instructions_bench as module  # the module rq's worker imports the job from
        module._rq_body[:] = [body]
        q = Queue(queue, connection=Redis.from_url(url))
        return q, lambda i: q.enqueue("framework_instructions_bench.rq_noop", i, job_timeout=-1), finished
    import dramatiq
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dramatiq_bench import plain_broker  # "plain": dramatiq's default middleware; "plain-kind": the kind's
    broker = plain_broker(url, "kind" if part == "plain-kind" else "dramatiq")

    def plain(x: int) -> None:
        body()

    actor = dramatiq.Actor(plain, broker=broker, actor_name=queue, queue_name=queue, priority=0,
                           options={"max_retries": 0})
    return broker, actor, finished


def part_publish(kind: str, part: str, url: str, queue: str, n: int) -> None:
    _, task, _ = _make(kind, part, url, queue, n)
    for i in range(n):
        if part == "funboost":
            task.push(i)
        elif kind in ("huey", "rq"):
            task(i)
        else:
            task.send(i)


def part_consume(kind: str, part: str, url: str, queue: str, n: int, go: str) -> None:
    handle, task, finished = _make(kind, part, url, queue, n)
    print("READY", flush=True)
    while not os.path.exists(go):  # the driver switches instrumentation on, then creates the file
        time.sleep(0.02)
    if part == "funboost":
        task.consume()
    elif kind == "huey":
        from huey.consumer import Consumer
        consumer = Consumer(handle, workers=CONCURRENCY, worker_type="thread", periodic=False, initial_delay=0.05,
                            max_delay=1.0, check_worker_health=False)
        for t in [consumer.scheduler] + [t for _, t in consumer.worker_threads]:
            t.start()
    elif kind == "rq":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from rq_bench import embedded_worker_class
        EmbeddedWorker = embedded_worker_class()  # rq's worker in threads of this process, as rq_bench's

        for _ in range(CONCURRENCY):
            w = EmbeddedWorker([handle.name], connection=handle.connection)
            threading.Thread(target=w.work, kwargs={"burst": True, "logging_level": "WARNING"}, daemon=True).start()
    else:
        import dramatiq
        dramatiq.Worker(handle, queues={queue}, worker_threads=CONCURRENCY).start()
    finished.wait(3600)
    os._exit(0)  # counted up to here: no shutdown


def instructions(kind: str, part: str, url: str, n: int) -> int:
    queue = f"fib_{part}_{uuid.uuid4().hex[:8]}"
    me = os.path.abspath(__file__)
    subprocess.run([sys.executable, me, "--publish", kind, part, url, queue, str(n)], check=True)
    with tempfile.TemporaryDirectory(prefix="fib-") as d:
        out, go = os.path.join(d, "callgrind.out"), os.path.join(d, "go")
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                              sys.executable, me, "--consume", kind, part, url, queue, str(n), go],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "READY":
            p.kill()
            raise SystemExit(f"{kind}/{part}: the consumer did not start: {line!r} {p.communicate()[1][-2000:]}")
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True)
        open(go, "w").close()
        _, err = p.communicate()
    m = re.search(r"Collected : (\d+)", err)
    if not m:
        raise SystemExit(f"{kind}/{part}: no callgrind total:\n{err[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("huey", "dramatiq", "rq"), default="huey")
    ap.add_argument("--url")
    ap.add_argument("--n1", type=int, default=100)
    ap.add_argument("--n2", type=int, default=500)
    ap.add_argument("--parts", default="plain,funboost")
    ap.add_argument("--publish", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--consume", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.publish:
        kind, part, url, queue, n = a.publish
        part_publish(kind, part, url, queue, int(n))
        os._exit(0)
    if a.consume:
        kind, part, url, queue, n, go = a.consume
        part_consume(kind, part, url, queue, int(n), go)
        return
    url = a.url or DEFAULT_URLS[a.kind]
    print(f"# {a.kind}: instructions per consumed task, callgrind, ({a.n2} - {a.n1}) tasks, {url}", flush=True)
    per_task: dict[str, float] = {}
    for part in a.parts.split(","):
        lo, hi = instructions(a.kind, part, url, a.n1), instructions(a.kind, part, url, a.n2)
        per_task[part] = (hi - lo) / (a.n2 - a.n1)
        print(f"  {part:10} {per_task[part]:12,.0f} instructions/task   ({lo:,} @ {a.n1}, {hi:,} @ {a.n2})",
              flush=True)
    for plain in ("plain", "plain-kind"):
        if plain in per_task and "funboost" in per_task:
            print(f"  funboost / {plain}: {per_task['funboost'] / per_task[plain]:.2f}")


if __name__ == "__main__":
    main()
