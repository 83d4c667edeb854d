"""Core benchmark: the memory and sqlite brokers through the engine, side by side with
``concurrent.futures.ThreadPoolExecutor`` and the original funboost 55.0, plus the per-message cost of the
plugin dispatch layer.

    bench/.venvs/ours/bin/python bench/core_bench.py [--n 20000] [--threads 50] [--repeat 2]
                                                     [--orig-sqlite-n N] [--skip-original] [--profile]

Figures (each part runs in a fresh process, ``--repeat`` times; mean ± half the range; peak RSS of the
part's process beside it):

  ThreadPoolExecutor(50)   submit N no-op calls (submit rate); submit to last completion (end to end);
                           after a warm-up round, as our end-to-end figure runs on a warm consumer
  funboost memory/sqlite   push N one by one with no consumer (publish); push_many N (batch publish);
                           consume the N waiting messages with 50 threads (consume); with the consumer
                           already running, push N one by one until the last one ran (end to end)
  original funboost 55.0   the same on MEMORY_QUEUE and SQLITE_QUEUE, in its own venv and a scratch dir
                           (FUNBOOST_ORIG_PYTHON, else bench/.venvs/orig)
  dispatch layer           per-message cost, one thread, of the memory broker called directly vs through
                           the Booster (publish) and the engine (prepare + runner, no thread hand-off);
                           pluggy hook call vs direct method call; one-time validation and lookup costs

The no-op function takes one argument and counts its runs under a lock (the same in every system).
Nothing here asserts a timing. The machine is small and shared: read every figure as ±30 %.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (RunCounter, Samples, best_us_per_call, emit, find_original_python, finish_child,  # noqa: E402
                     machine_info, push_then_consume, push_until_run, ratio, run_original, run_part, verdict)

HERE = os.path.abspath(__file__)


# ---------------------------------------------------------------- parts (each in a fresh process)
def part_tpe(n: int, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor
    c = RunCounter()

    def noop(x: int) -> None:
        c.hit()

    with ThreadPoolExecutor(threads) as ex:
        # warm up: start the pool's threads first, as our end-to-end figure runs on a warm consumer
        warm = min(n, 2000)
        c.reset(warm)
        for i in range(warm):
            ex.submit(noop, i)
        c.wait(600)
        c.reset(n)
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(noop, i)
        t1 = time.perf_counter()
        c.wait(600)
        t2 = time.perf_counter()
    emit({"submit": n / (t1 - t0), "e2e": n / (t2 - t0)})


def part_ours(kind: str, n: int, threads: int) -> None:
    from funboost import BoosterParams, boost
    c = RunCounter()

    # default state backend (sqlite, in the scratch dir), status records off: the out-of-the-box setup
    @boost(BoosterParams(queue_name=f"core_bench_{kind}_{uuid.uuid4().hex[:8]}", broker_kind=kind,
                         concurrent_num=threads, log_to_console=False))
    def noop(x: int) -> None:
        c.hit()

    t = time.perf_counter()
    noop.push_many(range(n))
    batch = n / (time.perf_counter() - t)
    noop.clear()
    c.reset(n)
    pub, con = push_then_consume(noop.push, noop.consume, c, 1800)
    c.reset(n)
    e2e = push_until_run(noop.push, c, 1800)
    emit({"publish": pub, "batch": batch, "consume": con, "e2e": e2e})


# The original funboost 55.0, run by _common.run_original in its own venv and a scratch dir.
ORIG_SOURCE = r'''
import os, sys, uuid
kind, n, threads, want_e2e = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if kind == "SQLITE_QUEUE":
    # its default queue directory is /sqllite_queues; point it into the scratch dir
    from funboost.funboost_config_deafult import BrokerConnConfig
    BrokerConnConfig.SQLLITE_QUEUES_PATH = os.environ["FUNBOOST_SQLITE_DIR"]
from funboost import BoosterParams, BrokerEnum, boost
from _common import RunCounter, emit, finish_child, push_then_consume, push_until_run  # bench/ is on the path

counter = RunCounter(n)

@boost(BoosterParams(queue_name="core_bench_orig_" + uuid.uuid4().hex[:8], broker_kind=getattr(BrokerEnum, kind),
                     concurrent_num=threads, log_level=30))
def noop(x):
    counter.hit()

pub, con = push_then_consume(noop.push, noop.consume, counter, 3600)
out = {"publish": pub, "consume": con, "ran": counter.n}
if want_e2e:
    counter.reset(n)
    out["e2e"] = push_until_run(noop.push, counter, 3600)
emit(out)
finish_child()
'''


# the fixtures of part_dispatch publish enough messages for three rounds of the inline engine path
_per_msg_us = functools.partial(best_us_per_call, repeat=3)


def part_dispatch(n: int) -> None:
    """Per-message cost of each layer, single thread, memory broker (no I/O: pure dispatch overhead)."""
    from funboost import BoosterParams, boost
    from funboost.brokers.memory import MemoryBroker
    from funboost.engine.consumer import Consumer
    from funboost.message import build_envelope
    from funboost.plugins.broker import OutgoingMessage
    from funboost.plugins.hookspecs import PROJECT_NAME, BrokerSpec
    from funboost.plugins.manager import _MethodNamePluginManager, resolve_broker_kind, validate_broker_class

    out: dict[str, float] = {}
    count = max(1000, n // 4)
    batch = 50

    # ---- broker called directly
    b = MemoryBroker(f"dispatch_{uuid.uuid4().hex[:8]}")
    env = build_envelope({"x": 1})
    om = OutgoingMessage(body="", task_id=env["extra"]["task_id"], payload=env)
    one = [om]
    out["broker.publish([m]) direct"] = _per_msg_us(lambda: b.publish(one), count)

    def fetch_ack() -> None:
        b.ack(b.fetch(batch, 0))
    b.purge()
    b.publish([om] * (count * batch * 3))
    out[f"broker.fetch({batch})+ack direct"] = _per_msg_us(fetch_ack, count // batch * 10, per_call=batch)
    b.purge()

    # ---- the same calls through a pluggy hook (what validation registers; not used on the hot path)
    pm = _MethodNamePluginManager(PROJECT_NAME)
    pm.add_hookspecs(BrokerSpec)
    pm.register(b, name="bench")
    hook = pm.hook
    out["pm.hook.publish(messages=[m]) via pluggy"] = _per_msg_us(lambda: hook.publish(messages=one), count)

    def fetch_ack_pluggy() -> None:
        hook.ack(deliveries=hook.fetch(max_count=batch, timeout=0))
    b.purge()
    b.publish([om] * (count * batch * 3))
    out[f"pm.hook.fetch({batch})+ack via pluggy"] = _per_msg_us(fetch_ack_pluggy, count // batch * 10,
                                                                per_call=batch)
    b.purge()

    # ---- one-time costs: validating a broker class against the hookspecs, resolving a kind name
    t = time.perf_counter()
    for _ in range(20):
        validate_broker_class(MemoryBroker)
    out["validate_broker_class (once per kind), µs"] = (time.perf_counter() - t) / 20 * 1e6
    out["resolve_broker_kind('MEMORY_QUEUE'), µs"] = _per_msg_us(lambda: resolve_broker_kind("MEMORY_QUEUE"),
                                                                 count)

    # ---- the Booster publish path (argument check, envelope, OutgoingMessage, broker, AsyncResult)
    ran = [0]

    @boost(BoosterParams(queue_name=f"dispatch_b_{uuid.uuid4().hex[:8]}", broker_kind="memory",
                         state_backend="memory", log_to_console=False))
    def noop(x: int) -> None:
        ran[0] += 1

    msg = {"x": 1}
    out["Booster._build (check + envelope + message)"] = _per_msg_us(lambda: noop._build(msg, None, None), count)
    out["Booster.publish(dict)"] = _per_msg_us(lambda: noop.publish(msg), count)
    out["Booster.push(1)"] = _per_msg_us(lambda: noop.push(1), count)
    out["Booster.push_many, per message"] = _per_msg_us(lambda: noop.push_many(range(1000)), max(1, count // 1000),
                                                        per_call=1000)
    noop.clear()

    # ---- the engine path per message, inline (decode + controls + runner + finish_task + ack batching),
    # without the dispatch thread and the pool hand-off
    consumer = Consumer(noop)
    broker = consumer.broker
    total = count * 3
    noop.push_many(range(total))

    def engine_inline() -> None:
        for d in broker.fetch(batch, 0):
            task = consumer.prepare(d)
            if task is not None:
                consumer.runner.run(task)
    out[f"engine inline: fetch({batch}) + prepare + run + ack, per message"] = _per_msg_us(
        engine_inline, count // batch, per_call=batch)

    def prepare_only() -> None:
        for d in broker.fetch(batch, 0):
            consumer.prepare(d)
            broker.ack([d])
    noop.push_many(range(count * 3))
    out["  of which Consumer.prepare (decode + controls) + broker.ack"] = _per_msg_us(
        prepare_only, count // batch, per_call=batch)
    consumer.acker.stop()
    consumer.executor.shutdown(wait=False)
    emit(out)


def part_profile(n: int, threads: int) -> None:
    """cProfile of the publish path and of the threaded consume path (memory broker)."""
    import cProfile
    import io
    import pstats

    from funboost import BoosterParams, boost
    c = RunCounter()

    @boost(BoosterParams(queue_name=f"profile_{uuid.uuid4().hex[:8]}", broker_kind="memory", concurrent_num=threads,
                         state_backend="memory", log_to_console=False))
    def noop(x: int) -> None:
        c.hit()

    def show(pr: cProfile.Profile, title: str) -> None:
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18)
        lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
        sys.stderr.write(f"\n==== {title} (top by own time)\n" + "\n".join(lines[3:]) + "\n")

    pr = cProfile.Profile()
    pr.enable()
    for i in range(n):
        noop.push(i)
    pr.disable()
    show(pr, f"push x{n}")
    # consume: profile every thread (threading.setprofile is per new thread; use the 3.12+ API if present)
    c.reset(n)
    import funboost.engine.consumer as consumer_mod
    from funboost.engine.consumer import Consumer
    orig_handle, orig_run = Consumer.handle_delivery, consumer_mod.Runner.run

    # profile the dispatch thread's work and the workers' work separately, by wrapping the two entry points
    p_dispatch, p_worker = cProfile.Profile(), cProfile.Profile()
    wlock = threading.Lock()

    def handle(self, d):  # runs in the single dispatch thread
        p_dispatch.enable()
        try:
            return orig_handle(self, d)
        finally:
            p_dispatch.disable()

    def run(self, task):  # workers: serialise the profiler (one Profile object is not thread-safe)
        with wlock:
            p_worker.enable()
            try:
                return orig_run(self, task)
            finally:
                p_worker.disable()
    Consumer.handle_delivery = handle
    consumer_mod.Runner.run = run
    noop.consume()
    c.wait(600)
    Consumer.handle_delivery, consumer_mod.Runner.run = orig_handle, orig_run
    show(p_dispatch, f"consume x{n}: dispatch thread (handle_delivery: prepare + submit)")
    show(p_worker, f"consume x{n}: workers (Runner.run, serialised for the profiler)")
    emit({"profiled": n})


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="tasks per figure (default 20000)")
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2, help="fresh-process runs of each part (default 2)")
    ap.add_argument("--orig-sqlite-n", type=int, default=None,
                    help="N for the original's SQLITE_QUEUE (slow: ~230 msg/s); default --n")
    ap.add_argument("--skip-original", action="store_true", help="do not run the original funboost 55.0")
    ap.add_argument("--profile", action="store_true", help="also print cProfile tables of push and consume")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        name, *rest = a.part
        if name == "tpe":
            part_tpe(int(rest[0]), int(rest[1]))
        elif name == "ours":
            part_ours(rest[0], int(rest[1]), int(rest[2]))
        elif name == "dispatch":
            part_dispatch(int(rest[0]))
        elif name == "profile":
            part_profile(int(rest[0]), int(rest[1]))
        finish_child()
        return

    n, th, rep = a.n, a.threads, a.repeat
    orig_sqlite_n = a.orig_sqlite_n or n
    print(f"core benchmark: N={n}, {th} threads, {rep} fresh-process run(s) per figure (mean ± half range)")
    print(f"machine: {machine_info()}")
    print("(2 shared, noisy cores: other jobs run concurrently; read figures as ±30 %)\n", flush=True)

    S: dict[str, Samples] = {}

    def add(key: str, res: dict | None, field: str) -> None:
        S.setdefault(key, Samples()).add(None if res is None else res.get(field),
                                         None if res is None else res.get("rss_mb"))

    orig_py = None if a.skip_original else find_original_python()
    for r in range(rep):
        print(f"run {r + 1}/{rep} ...", flush=True)
        res = run_part(HERE, "tpe", n, th)
        add("tpe submit", res, "submit")
        add("tpe e2e", res, "e2e")
        for kind in ("memory", "sqlite"):
            res = run_part(HERE, "ours", kind, n, th)
            for f in ("publish", "batch", "consume", "e2e"):
                add(f"{kind} {f}", res, f)
        if orig_py:
            res = run_original(ORIG_SOURCE, "MEMORY_QUEUE", n, th, 1, python=orig_py)
            for f in ("publish", "consume", "e2e"):
                add(f"orig memory {f}", res, f)
            res = run_original(ORIG_SOURCE, "SQLITE_QUEUE", orig_sqlite_n, th, 0, python=orig_py, timeout=3600)
            for f in ("publish", "consume"):
                add(f"orig sqlite {f}", res, f)

    rows = [
        ("ThreadPoolExecutor(%d) submit" % th, "tpe submit"),
        ("ThreadPoolExecutor(%d) end to end" % th, "tpe e2e"),
        ("funboost memory   push 1 by 1", "memory publish"),
        ("funboost memory   push_many", "memory batch"),
        ("funboost memory   consume", "memory consume"),
        ("funboost memory   end to end", "memory e2e"),
        ("original MEMORY_QUEUE push", "orig memory publish"),
        ("original MEMORY_QUEUE consume", "orig memory consume"),
        ("original MEMORY_QUEUE end to end", "orig memory e2e"),
        ("funboost sqlite   push 1 by 1", "sqlite publish"),
        ("funboost sqlite   push_many", "sqlite batch"),
        ("funboost sqlite   consume", "sqlite consume"),
        ("funboost sqlite   end to end", "sqlite e2e"),
        ("original SQLITE_QUEUE push" + (f" (N={orig_sqlite_n})" if orig_sqlite_n != n else ""),
         "orig sqlite publish"),
        ("original SQLITE_QUEUE consume" + (f" (N={orig_sqlite_n})" if orig_sqlite_n != n else ""),
         "orig sqlite consume"),
    ]
    print("\nthroughput")
    for label, key in rows:
        if key.startswith("orig") and not orig_py:
            continue
        print(f"  {label:<44} {S.get(key, Samples()).fmt()}")
    if not a.skip_original and not orig_py:
        print("  original funboost 55.0 not found (python bench/run_all.py --setup-only creates bench/.venvs/orig)")

    print("\ntargets")
    targets = [
        ("memory end to end >= 50 % of ThreadPoolExecutor end to end", ratio(S["memory e2e"], S["tpe e2e"]), 0.5),
        ("memory consume >= 2x original MEMORY_QUEUE consume",
         ratio(S["memory consume"], S.get("orig memory consume", Samples())), 2.0),
        ("sqlite publish >= 5x original SQLITE_QUEUE publish",
         ratio(S["sqlite publish"], S.get("orig sqlite publish", Samples())), 5.0),
        ("sqlite consume >= 20x original SQLITE_QUEUE consume",
         ratio(S["sqlite consume"], S.get("orig sqlite consume", Samples())), 20.0),
    ]
    for label, value, target in targets:
        shown = "  n/a " if value is None else f"x{value:5.2f}"
        print(f"  {label:<62} {shown}  {verdict(value, target)}")

    print("\ndispatch layer, per message, one thread (best of 3; memory broker, no I/O)")
    disp = [run_part(HERE, "dispatch", n) for _ in range(rep)]
    disp = [d for d in disp if d]
    if disp:
        for key in disp[0]:
            if key == "rss_mb":
                continue
            s = Samples()
            for d in disp:
                s.add(d.get(key))
            unit = "" if key.endswith("µs") else "µs/msg"
            print(f"  {key:<66} {s.fmt(unit, digits=2)}")
        d0 = {k: statistics_mean([d[k] for d in disp]) for k in disp[0]}
        direct = d0["broker.publish([m]) direct"]
        via_pm = d0["pm.hook.publish(messages=[m]) via pluggy"]
        print(f"  -> pluggy hook call adds {via_pm - direct:.2f} µs per publish call; the engine validates a broker "
              f"class once, then calls its methods directly")
        eng = d0["engine inline: fetch(50) + prepare + run + ack, per message"]
        fa = d0["broker.fetch(50)+ack direct"]
        pub = d0["Booster.publish(dict)"]
        print(f"  -> publish: broker {direct:.2f} µs of {pub:.2f} µs through Booster.publish "
              f"({100 * direct / pub:.0f} %)")
        print(f"  -> consume: broker fetch+ack {fa:.2f} µs of {eng:.2f} µs through the engine inline "
              f"({100 * fa / eng:.0f} %)")
        if S["memory consume"].ok:
            wall = 1e6 / S["memory consume"].mean
            print(f"  -> threaded consume costs {wall:.1f} µs/msg of wall time; the remaining "
                  f"{wall - eng:.1f} µs is the dispatch-thread -> pool hand-off, locks and GIL switching")

    if a.profile:
        print("\nprofiles (stderr of the profile part)")
        import subprocess
        subprocess.run([sys.executable, HERE, "--part", "profile", str(n), str(th)], env=dict(
            os.environ, FUNBOOST_LOG_TO_CONSOLE="0"))


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
