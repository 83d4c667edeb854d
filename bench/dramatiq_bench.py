"""Plain dramatiq vs funboost on broker_kind="DRAMATIQ", side by side, same broker, same worker settings.

    python bench/dramatiq_bench.py [--n 3000] [--concurrency 8] [--brokers redis,amqp] [--rounds 2]

Plain dramatiq: ``dramatiq.Actor`` (``max_retries=0``) + ``.send()``; worker = ``dramatiq.Worker`` in the
process with ``worker_threads`` = concurrency, on dramatiq's ``RabbitmqBroker`` / ``RedisBroker`` with
dramatiq's default middleware (what a dramatiq user runs) and the kind's delivery settings (publisher
confirms, heartbeat timeout); a second plain part runs on the broker the DRAMATIQ kind builds (its two
middleware: ``Retries(max_retries=0)``, ``CurrentMessage``), which shows what the funboost layer costs on
top of identical dramatiq work. funboost: ``@boost(... broker_kind="DRAMATIQ")`` + ``.push()`` /
``.consume()`` on the same configuration. Each part runs in its own subprocess. Consume rate: from the
first task's start to the last task's end (worker start-up excluded). CPU per task: the process's
user+system time of the publish loop / of the consume phase, divided by the number of messages.
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
from typing import Any

URLS = {"redis": os.environ.get("FUNBOOST_DRAMATIQ_BENCH_REDIS", "redis://127.0.0.1:6379/13"),
        "amqp": os.environ.get("FUNBOOST_DRAMATIQ_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def plain_broker(url: str, middleware: str = "dramatiq") -> Any:
    """Plain dramatiq's broker with the DRAMATIQ kind's delivery settings (RabbitMQ publisher confirms, the
    Redis heartbeat timeout: the same guarantee as a funboost push) and ``middleware`` = ``"dramatiq"``:
    dramatiq's default middleware (what a dramatiq user runs), or ``"kind"``: the kind's own two."""
    from funboost_dramatiq import DramatiqOptions, build_broker
    options = DramatiqOptions(broker_url=url)
    if middleware == "kind":
        return build_broker(options)
    if options.family() == "redis":
        from dramatiq.brokers.redis import RedisBroker
        return RedisBroker(url=url, heartbeat_timeout=int(options.resolved_heartbeat_timeout() * 1000))
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    return RabbitmqBroker(url=url, confirm_delivery=options.confirm_delivery)


def run_plain(url: str, n: int, conc: int, middleware: str = "dramatiq") -> dict:
    import dramatiq
    broker = plain_broker(url, middleware)
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    done, first, finished, noop_body = _counter(n)

    def noop(x):
        noop_body()

    actor = dramatiq.Actor(noop, broker=broker, actor_name=q, queue_name=q, priority=0, options={"max_retries": 0})
    actor.send(-1)  # warm the connection and declare the queue
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(n - 1):
        actor.send(i)
    pub, pub_cpu = (n - 1) / (time.perf_counter() - t0), (_cpu() - c0) / (n - 1)
    w = dramatiq.Worker(broker, queues={q}, worker_threads=conc)
    c0 = _cpu()
    w.start()
    finished.wait(600)
    cons, cons_cpu = (n - 1) / (done[1] - first[0]), (_cpu() - c0) / n
    w.stop()
    broker.flush(q)
    broker.close()
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu * 1e6}


def run_funboost(url: str, n: int, conc: int) -> dict:
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from funboost import BoosterParams, boost
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    done, first, finished, noop_body = _counter(n)

    @boost(BoosterParams(queue_name=q, broker_kind="DRAMATIQ", broker_exclusive_config={"broker_url": url},
                         concurrent_num=conc, state_backend="memory", log_to_console=False, max_retry_times=0))
    def noop(x):
        noop_body()

    noop.push(-1)
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(n - 1):
        noop.push(i)
    pub, pub_cpu = (n - 1) / (time.perf_counter() - t0), (_cpu() - c0) / (n - 1)
    c0 = _cpu()
    noop.consume()
    finished.wait(600)
    cons, cons_cpu = (n - 1) / (done[1] - first[0]), (_cpu() - c0) / n
    noop.stop_consume(10)
    noop.clear()
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu * 1e6}


def push_alternating(url: str, n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain dramatiq's ``.send()`` (default middleware) and funboost's ``.push()`` alternating in
    this process, ``n // 2`` per side and round (see ``_common.alternate_push``); both queues are flushed."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    import dramatiq
    from _common import alternate_push, noop_booster
    broker = plain_broker(url)
    qp, qf = f"bench_plain_{uuid.uuid4().hex[:8]}", f"bench_fb_{uuid.uuid4().hex[:8]}"
    actor = dramatiq.Actor(lambda x: None, broker=broker, actor_name=qp, queue_name=qp, priority=0,
                           options={"max_retries": 0})

    ours = noop_booster("DRAMATIQ", qf, {"broker_url": url}, conc)
    try:
        return alternate_push(actor.send, ours.push, max(100, n // 2), rounds)
    finally:
        broker.flush(qp)
        broker.close()
        ours.clear()


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
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--brokers", default="redis,amqp")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        if a.part == "funboost":
            print(json.dumps(run_funboost(a.url, a.n, a.concurrency)))
        else:  # plain / plain-kind
            print(json.dumps(run_plain(a.url, a.n, a.concurrency, "kind" if a.part == "plain-kind" else "dramatiq")))
        return
    print(f"N={a.n} messages, worker_threads {a.concurrency}, best of {a.rounds} rounds (msg/s; CPU µs per message)")
    print(f"{'broker':7} {'system':40} {'publish':>8} {'consume':>8} {'pub CPU':>8} {'cons CPU':>8}")
    keys = ("publish", "consume", "publish_cpu_us", "consume_cpu_us")
    parts = (("plain", "plain dramatiq .send()"), ("plain-kind", "plain dramatiq, the kind's middleware"),
             ("funboost", "funboost DRAMATIQ .push()"))
    for fam in a.brokers.split(","):
        best: dict[str, dict] = {}
        for _ in range(a.rounds):
            for part, _label in parts:
                out = subprocess.run([sys.executable, __file__, "--part", part, "--url", URLS[fam], "--n", str(a.n),
                                      "--concurrency", str(a.concurrency)], capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:])
                    raise SystemExit(1)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                b = best.setdefault(part, {"publish": 0.0, "consume": 0.0, "publish_cpu_us": 1e12,
                                           "consume_cpu_us": 1e12})
                b["publish"] = max(b["publish"], r["publish"])
                b["consume"] = max(b["consume"], r["consume"])
                b["publish_cpu_us"] = min(b["publish_cpu_us"], r["publish_cpu_us"])
                b["consume_cpu_us"] = min(b["consume_cpu_us"], r["consume_cpu_us"])
        for part, label in parts:
            v = best[part]
            print(f"{fam:7} {label:40} {v['publish']:8.0f} {v['consume']:8.0f} {v['publish_cpu_us']:8.0f} "
                  f"{v['consume_cpu_us']:8.0f}")
        f = best["funboost"]
        for part, label in (("plain", "funboost / plain"), ("plain-kind", "funboost / plain, kind's middleware")):
            p = best[part]
            print(f"{fam:7} {label:40} " + " ".join(f"{f[k] / p[k]:8.2f}" for k in keys))


if __name__ == "__main__":
    main()
