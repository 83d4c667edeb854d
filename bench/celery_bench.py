"""Plain Celery vs funboost on broker_kind="CELERY", side by side, same broker, same worker settings.

    bench/.venvs/ours/bin/python bench/celery_bench.py [--n 3000] [--concurrency 8] [--brokers redis,amqp]

Plain Celery: ``@app.task`` + ``.delay()``; worker = Celery's threads pool embedded in the process
(concurrency C, prefetch multiplier 1, acks_late), the same settings the CELERY kind uses. funboost:
``@boost(... broker_kind="CELERY")`` + ``.push()`` / ``.consume()`` on the same Celery configuration.
Each part runs in its own subprocess. Consume rate: from the first task's start to the last task's end (worker start-up excluded).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import uuid

from _common import (RunCounter, best_of_rounds, framework_arguments, funboost_side, noop_booster, print_best,
                     publish_then_drain)

URLS = {"redis": os.environ.get("FUNBOOST_CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/13"),
        "amqp": os.environ.get("FUNBOOST_CELERY_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")}


def run_plain(url: str, n: int, conc: int) -> dict:
    from funboost_celery import CeleryOptions, build_conf
    from celery import Celery
    app = Celery("plain_bench")
    app.conf.update(build_conf(CeleryOptions(broker_url=url)))
    app.set_default()  # what `celery -A ... worker -P threads` does; the tracer looks tasks up there
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    counter = RunCounter()

    @app.task(name=q, queue=q, acks_late=True, reject_on_worker_lost=True)
    def noop(x):
        counter.hit()

    workers = []

    def start() -> None:  # made once the messages wait: its construction stays out of the publish figures
        workers.append(app.WorkController(pool_cls="threads", concurrency=conc, queues=[q], without_mingle=True,
                                          without_gossip=True, loglevel="WARNING"))
        threading.Thread(target=workers[0].start, daemon=True).start()
    figures = publish_then_drain(noop.delay, start, counter, n)
    _stop_worker(workers[0])
    _cleanup(url, q)
    return figures


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
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    figures, _ = funboost_side("CELERY", q, {"broker_url": url}, n, conc)
    _cleanup(url, q)
    return figures


def push_alternating(url: str, n: int, conc: int, rounds: int = 10) -> dict:
    """Push only: plain ``.delay()`` and funboost's ``.push()`` alternating in this process, ``n // 2`` per
    side and round (see ``_common.alternate_push``); nothing is consumed, both queues are deleted."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"
    from _common import alternate_push
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


def _cleanup(url: str, q: str) -> None:
    from funboost_celery import CeleryBroker, CeleryOptions
    b = CeleryBroker(q, CeleryOptions(broker_url=url))
    b.delete_queue()
    b.close()


def main() -> None:
    a = framework_arguments(3000, "redis,amqp")
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.url, a.n, a.concurrency)))
        return
    print(f"N={a.n} messages, threads pool concurrency {a.concurrency}, best of {a.rounds} rounds (msg/s)")
    print(f"{'broker':8} {'system':22} {'publish':>9} {'consume':>9}")
    for fam in a.brokers.split(","):
        best = best_of_rounds(a.rounds, ("plain", "funboost"), lambda part: [
            sys.executable, __file__, "--part", part, "--url", URLS[fam], "--n", str(a.n),
            "--concurrency", str(a.concurrency)])
        print_best(best, (("plain", "plain Celery .delay()"), ("funboost", "funboost CELERY .push()")),
                   ("publish", "consume"), 22, (9, 9), prefix=f"{fam:8} ")


if __name__ == "__main__":
    main()
