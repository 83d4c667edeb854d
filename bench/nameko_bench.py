"""Plain nameko vs funboost on broker_kind="NAMEKO", side by side, same RabbitMQ, same max_workers.

    python bench/nameko_bench.py [--n 2000] [--concurrency 8] [--rounds 2]

Plain nameko: a service with one no-op ``@rpc`` method run by nameko's ``ServiceRunner`` (in a
monkey-patched process of its own, ``max_workers`` = concurrency); the caller sends N requests with
``ClusterRpcProxy`` ``call_async``. funboost: ``@boost(... broker_kind="NAMEKO")`` + ``.push()`` / ``.consume()``
(the plugin's service process forwards each call to the consuming process, which runs it through funboost).
Both publish all N requests first, then start the service. Publish rate: the publish loop. Consume rate:
from the first call's start to the last call's end, measured where the function runs. CPU per message: the
publishing process's user+system time of its loop; for consume, the CPU of every process on the path
(plain: the service process; funboost: the consuming process and its service process).

``run_plain(n, concurrency)`` / ``run_funboost(n, concurrency)`` measure one side once in the calling process
and return its figures (``publish``, ``consume`` msg/s; ``publish_cpu_us``, ``consume_cpu_us``); they
declare and delete their own queue. ``main()`` runs each in a fresh process; ``run_all.py`` calls them through
``bench/_call.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from _common import (RunCounter, best_of_rounds, framework_arguments, noop_booster, print_best, proc_cpu_seconds,
                     timed_loop)

AMQP_URI = os.environ.get("FUNBOOST_NAMEKO_BENCH_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")

#: the plain service process: monkey-patch first (nameko's rule), then count calls
PLAIN_SERVICE = r"""
import eventlet; eventlet.monkey_patch()
import json, os, sys, time
from nameko.rpc import rpc
from nameko.runners import ServiceRunner
queue, n, conc, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
state = {"done": 0, "first": 0.0, "last": 0.0}
class Service:
    name = queue
    @rpc
    def run(self, x):
        if state["done"] == 0:
            state["first"] = time.perf_counter()
        state["done"] += 1
        if state["done"] >= n:
            state["last"] = time.perf_counter()
            t = os.times()
            with open(out, "w") as f:
                json.dump({"consume": (n - 1) / (state["last"] - state["first"]), "cpu": t.user + t.system}, f)
runner = ServiceRunner({"AMQP_URI": "%s", "max_workers": conc})
runner.add_service(Service)
runner.start()
runner.wait()
"""


def _children_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_seconds(pid)
        except OSError:
            pass
    return total


def _declare(queue: str) -> None:
    import kombu
    from funboost_nameko import NamekoOptions
    from funboost_nameko.broker import rpc_queue
    with kombu.Connection(AMQP_URI) as conn:
        rpc_queue(NamekoOptions(amqp_uri=AMQP_URI), queue)(conn.default_channel).declare()


def _delete(queue: str) -> None:
    import kombu
    with kombu.Connection(AMQP_URI) as conn:
        conn.default_channel.queue_delete(f"rpc-{queue}")


def run_plain(n: int, conc: int) -> dict[str, float]:
    """Plain nameko, once, in this process (the service in a child): publish / consume msg/s and CPU µs per
    message. Declares and deletes its own queue."""
    from nameko.standalone.rpc import ClusterRpcProxy
    q = f"bench_plain_{uuid.uuid4().hex[:8]}"
    _declare(q)
    svc = None
    try:
        with tempfile.TemporaryDirectory(prefix="nameko-bench-") as d:
            out = os.path.join(d, "service.json")
            with ClusterRpcProxy({"AMQP_URI": AMQP_URI}) as rpc:
                method = getattr(rpc, q).run
                replies = []
                pub, pub_cpu = timed_loop(lambda i: replies.append(method.call_async(i)), n)
                svc = subprocess.Popen([sys.executable, "-W", "ignore", "-c", PLAIN_SERVICE % AMQP_URI, q, str(n),
                                        str(conc), out])
                for reply in replies:
                    reply.result()
            # every reply came back, so the call that wrote the file has returned
            with open(out) as fh:
                r = json.load(fh)
    finally:
        if svc is not None:
            svc.terminate()
            svc.wait()
        _delete(q)
    return {"publish": pub, "consume": r["consume"], "publish_cpu_us": pub_cpu * 1e6,
            "consume_cpu_us": r["cpu"] / n * 1e6}


def run_funboost(n: int, conc: int) -> dict[str, float]:
    """funboost on NAMEKO, once, in this process (its service process a child): the figures of
    :func:`run_plain`. Declares and deletes its own queue."""
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    counter = RunCounter(n)
    noop = noop_booster("NAMEKO", q, {"amqp_uri": AMQP_URI}, conc, counter)
    try:
        noop.push(-1)  # declares the queue before the service exists, like _declare on the plain side
        noop.clear()
        pub, pub_cpu = timed_loop(noop.push, n)
        c0 = time.process_time()
        noop.consume()
        counter.wait_all(600, "calls")
        out = subprocess.run(["pgrep", "-f", f"funboost_nameko.service .*{q}"], capture_output=True, text=True)
        cons_cpu = (time.process_time() - c0) + _children_cpu([int(p) for p in out.stdout.split()])
    finally:
        noop.stop_consume(10)
        _delete(q)
    return {"publish": pub, "consume": counter.steady_rate(), "publish_cpu_us": pub_cpu * 1e6,
            "consume_cpu_us": cons_cpu / n * 1e6}


def main() -> None:
    a = framework_arguments(2000)
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} calls, max_workers {a.concurrency}, best of {a.rounds} rounds (msg/s; CPU µs per message)")
    print(f"{'system':28} {'publish':>8} {'consume':>8} {'pub CPU':>8} {'cons CPU':>8}")
    keys = ("publish", "consume", "publish_cpu_us", "consume_cpu_us")
    best = best_of_rounds(a.rounds, ("plain", "funboost"), lambda part: [
        sys.executable, "-W", "ignore", __file__, "--part", part, "--n", str(a.n), "--concurrency", str(a.concurrency)])
    print_best(best, (("plain", "plain nameko call_async"), ("funboost", "funboost NAMEKO .push()")), keys, 28,
               (8, 8, 8, 8))


if __name__ == "__main__":
    main()
