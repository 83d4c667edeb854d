"""Plain Celery vs funboost on broker_kind="CELERY", side by side, same broker, same worker settings.

    bench/.venvs/ours/bin/python bench/celery_bench.py [--n 3000] [--concurrency 8] [--brokers redis,amqp]

Plain Celery: ``@app.task`` + ``.delay()``; worker = Celery's threads pool embedded in the process
(concurrency C, prefetch multiplier 1, acks_late), the same settings the CELERY kind uses. funboost:
``@boost(... broker_kind="CELERY")`` + ``.push()`` / ``.consume()`` on the same Celery configuration.
Each part runs in its own subprocess. Consume rate: from the first task's start to the last task's end (worker start-up excluded).
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

URLS = {"redis": os.environ.get("FUNBOOST_CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/13"),
        "amqp": os.environ.get("FUNBOOST_CELERY_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")}


def run_plain(url: str, n: int, conc: int) -> dict:
    from funboost_celery import CeleryOptions, build_conf
    from celery import Celery
    app = Celery("plain_bench")
    app.conf.update(build_conf(CeleryOptions(broker_url=url)))
    app.set_default()  # what `celery -A ... worker -P threads` does; the tracer looks tasks up there
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    done, first, finished, noop_body = _counter(n)

    @app.task(name=q, queue=q, acks_late=True, reject_on_worker_lost=True)
    def noop(x):
        noop_body()

    noop.delay(-1)  # warm the producer connection and declare the queue
    t0 = time.perf_counter()
    for i in range(n - 1):
        noop.delay(i)
    pub = (n - 1) / (time.perf_counter() - t0)
    w = app.WorkController(pool_cls="threads", concurrency=conc, queues=[q], without_mingle=True,
                           without_gossip=True, loglevel="WARNING")
    threading.Thread(target=w.start, daemon=True).start()
    finished.wait(600)
    cons = (n - 1) / (done[1] - first[0])  # steady state: first task started .. last task done
    _stop_worker(w)
    _cleanup(url, q)
    return {"publish": pub, "consume": cons}


def _stop_worker(w, timeout: float = 15.0) -> None:
    """Stop plain Celery's embedded worker without waiting on it for ever. ``WorkController.stop`` called
    from another thread than the worker's own cancels the remote-control consumer on the AMQP connection
    the worker thread is still reading: the cancel's reply can be taken by that thread, and ``stop`` then
    blocked for about 180 s (seen in 1 of 4 runs of this part on RabbitMQ; py-spy: ``Pidbox._close_channel``
    -> ``basic_cancel`` -> ``drain_events``). The figures are taken before this; the process ends right after."""
    t = threading.Thread(target=w.stop, kwargs={"in_sighandler": False}, daemon=True, name="stop-plain-celery")
    t.start()
    t.join(timeout)


def run_funboost(url: str, n: int, conc: int) -> dict:
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from funboost import BoosterParams, boost
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    done, first, finished, noop_body = _counter(n)

    @boost(BoosterParams(queue_name=q, broker_kind="CELERY", broker_exclusive_config={"broker_url": url},
                         concurrent_num=conc, state_backend="memory", log_to_console=False, max_retry_times=0))
    def noop(x):
        noop_body()

    noop.push(-1)
    t0 = time.perf_counter()
    for i in range(n - 1):
        noop.push(i)
    pub = (n - 1) / (time.perf_counter() - t0)
    noop.consume()
    finished.wait(600)
    cons = (n - 1) / (done[1] - first[0])  # steady state: first task started .. last task done
    noop.stop_consume(10)
    _cleanup(url, q)
    return {"publish": pub, "consume": cons}


def push_alternating(url: str, n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain ``.delay()`` and funboost's ``.push()`` alternating in this process, ``n // 2`` per
    side and round (see ``_common.alternate_push``); nothing is consumed, both queues are deleted."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push, noop_booster
    from celery import Celery

    from funboost_celery import CeleryOptions, build_conf
    app = Celery("plain_bench")
    app.conf.update(build_conf(CeleryOptions(broker_url=url)))
    qp, qf = f"bench_plain_{uuid.uuid4().hex[:8]}", f"bench_fb_{uuid.uuid4().hex[:8]}"

    @app.task(name=qp, queue=qp, acks_late=True, reject_on_worker_lost=True)
    def plain(x):
        pass

    ours = noop_booster("CELERY", qf, {"broker_url": url}, conc)
    try:
        return alternate_push(plain.delay, ours.push, max(100, n // 2), rounds)
    finally:
        _cleanup(url, qp)
        _cleanup(url, qf)


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


def _cleanup(url: str, q: str) -> None:
    from funboost_celery import CeleryBroker, CeleryOptions
    b = CeleryBroker(q, CeleryOptions(broker_url=url))
    b.delete_queue()
    b.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--brokers", default="redis,amqp")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.url, a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, threads pool concurrency {a.concurrency}, best of {a.rounds} rounds (msg/s)")
    print(f"{'broker':8} {'system':22} {'publish':>9} {'consume':>9}")
    for fam in a.brokers.split(","):
        best: dict[str, dict] = {}
        for _ in range(a.rounds):
            for part in ("plain", "funboost"):
                out = subprocess.run([sys.executable, __file__, "--part", part, "--url", URLS[fam], "--n", str(a.n),
                                      "--concurrency", str(a.concurrency)], capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:])
                    raise SystemExit(1)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                b = best.setdefault(part, {"publish": 0.0, "consume": 0.0})
                b["publish"] = max(b["publish"], r["publish"])
                b["consume"] = max(b["consume"], r["consume"])
        for part, label in (("plain", "plain Celery .delay()"), ("funboost", "funboost CELERY .push()")):
            print(f"{fam:8} {label:22} {best[part]['publish']:9.0f} {best[part]['consume']:9.0f}")
        p, f = best["plain"], best["funboost"]
        print(f"{fam:8} {'funboost / plain':22} {f['publish'] / p['publish']:9.2f} {f['consume'] / p['consume']:9.2f}")


if __name__ == "__main__":
    main()
