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

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

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


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _children_cpu(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
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
                c0, t0 = _cpu(), time.perf_counter()
                replies = [method.call_async(i) for i in range(n)]
                pub, pub_cpu = n / (time.perf_counter() - t0), (_cpu() - c0) / n
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
    from funboost import BoosterParams, boost
    q = f"bench_fb_{uuid.uuid4().hex[:8]}"
    done = [0, 0.0, 0.0]
    lock = threading.Lock()
    finished = threading.Event()

    @boost(BoosterParams(queue_name=q, broker_kind="NAMEKO", broker_exclusive_config={"amqp_uri": AMQP_URI},
                         concurrent_num=conc, state_backend="memory", log_to_console=False, max_retry_times=0))
    def noop(x):
        with lock:
            if done[0] == 0:
                done[1] = time.perf_counter()
            done[0] += 1
            if done[0] >= n:
                done[2] = time.perf_counter()
                finished.set()

    try:
        noop.push(-1)  # declares the queue before the service exists, like _declare on the plain side
        noop.clear()
        c0, t0 = _cpu(), time.perf_counter()
        for i in range(n):
            noop.push(i)
        pub, pub_cpu = n / (time.perf_counter() - t0), (_cpu() - c0) / n
        c0 = _cpu()
        noop.consume()
        if not finished.wait(600):
            raise RuntimeError(f"only {done[0]} of {n} calls ran")
        out = subprocess.run(["pgrep", "-f", f"funboost_nameko.service .*{q}"], capture_output=True, text=True)
        cons_cpu = (_cpu() - c0) + _children_cpu([int(p) for p in out.stdout.split()])
    finally:
        noop.stop_consume(10)
        _delete(q)
    cons = (n - 1) / (done[2] - done[1])
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        fn = run_plain if a.part == "plain" else run_funboost
        print(json.dumps(fn(a.n, a.concurrency)))
        return
    print(f"N={a.n} calls, max_workers {a.concurrency}, best of {a.rounds} rounds (msg/s; CPU µs per message)")
    print(f"{'system':28} {'publish':>8} {'consume':>8} {'pub CPU':>8} {'cons CPU':>8}")
    keys = ("publish", "consume", "publish_cpu_us", "consume_cpu_us")
    best: dict[str, dict] = {}
    for _ in range(a.rounds):
        for part in ("plain", "funboost"):
            out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--part", part, "--n", str(a.n),
                                  "--concurrency", str(a.concurrency)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:])
                raise SystemExit(1)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            b = best.setdefault(part, {"publish": 0.0, "consume": 0.0, "publish_cpu_us": 1e12, "consume_cpu_us": 1e12})
            b["publish"] = max(b["publish"], r["publish"])
            b["consume"] = max(b["consume"], r["consume"])
            b["publish_cpu_us"] = min(b["publish_cpu_us"], r["publish_cpu_us"])
            b["consume_cpu_us"] = min(b["consume_cpu_us"], r["consume_cpu_us"])
    for part, label in (("plain", "plain nameko call_async"), ("funboost", "funboost NAMEKO .push()")):
        v = best[part]
        print(f"{label:28} {v['publish']:8.0f} {v['consume']:8.0f} {v['publish_cpu_us']:8.0f} {v['consume_cpu_us']:8.0f}")
    p, f = best["plain"], best["funboost"]
    print(f"{'funboost / plain':28} " + " ".join(f"{f[k] / p[k]:8.2f}" for k in keys))


if __name__ == "__main__":
    main()
