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

import json
import os
import sys
import uuid
from typing import Any

from _common import (RunCounter, best_of_rounds, framework_arguments, funboost_side, noop_booster, print_best,
                     publish_then_drain)

URLS = {"redis": os.environ.get("FUNBOOST_DRAMATIQ_BENCH_REDIS", "redis://127.0.0.1:6379/13"),
        "amqp": os.environ.get("FUNBOOST_DRAMATIQ_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")}


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
    counter = RunCounter()

    def noop(x):
        counter.hit()

    actor = dramatiq.Actor(noop, broker=broker, actor_name=q, queue_name=q, priority=0, options={"max_retries": 0})
    workers = []

    def start() -> None:  # made once the messages wait: its construction stays out of the publish figures
        workers.append(dramatiq.Worker(broker, queues={q}, worker_threads=conc))
        workers[0].start()
    figures = publish_then_drain(actor.send, start, counter, n)
    workers[0].stop()
    broker.flush(q)
    broker.close()
    return figures


def run_funboost(url: str, n: int, conc: int) -> dict:
    figures, noop = funboost_side("DRAMATIQ", f"bench_fb_{uuid.uuid4().hex[:8]}", {"broker_url": url}, n, conc)
    noop.clear()
    return figures


def push_alternating(url: str, n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain dramatiq's ``.send()`` (default middleware) and funboost's ``.push()`` alternating in
    this process, ``n // 2`` per side and round (see ``_common.alternate_push``); both queues are flushed."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    import dramatiq
    from _common import alternate_push
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


def main() -> None:
    a = framework_arguments(3000, "redis,amqp")
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
        best = best_of_rounds(a.rounds, [part for part, _label in parts], lambda part: [
            sys.executable, __file__, "--part", part, "--url", URLS[fam], "--n", str(a.n),
            "--concurrency", str(a.concurrency)])
        print_best(best, parts, keys, 40, (8, 8, 8, 8), prefix=f"{fam:7} ", ratios=(
            ("plain", "funboost / plain"), ("plain-kind", "funboost / plain, kind's middleware")))


if __name__ == "__main__":
    main()
