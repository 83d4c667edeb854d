"""Cost of the engine's task controls on the hot path, and the asyncio mode's throughput.

    bench/.venvs/ours/bin/python bench/controls_bench.py [--n 20000] [--threads 50] [--repeat 2]

Memory broker, N no-op tasks waiting, then consumed with 50 threads (consume rate, fresh process per run):

  baseline              every control off (the defaults), memory state backend
  one control on        qps=1,000,000 (a limiter that never has to wait), msg_expire_seconds=3600 (nothing
                        expires), do_task_filtering with the memory state backend (every task distinct, so
                        each one is checked and recorded), function_timeout=60 (each call runs in a killable
                        thread), status records (is_save_status, memory state backend)
  common ones on        all five at once

Cost when OFF: a control that is off still costs the guard that decides it is off, on every message. Those
guards are timed on a live Consumer (the same expressions the engine evaluates per message: consumer.py,
runner.py) and set against the baseline per-message cost of the whole engine path run inline in one thread.
The ON rows bound the OFF cost from above as well: the OFF path is a prefix of the ON path.

asyncio mode: ``async def`` no-ops with concurrent_mode=ASYNC (50 and 500 at once), beside the threading
mode's sync no-op and a bare asyncio loop fed from another thread (run_coroutine_threadsafe, the same
hand-off the engine uses) as the floor.

Nothing asserts a timing. The machine has 2 shared, noisy cores: read every figure as ±30 %.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Samples, best_us_per_call, emit, finish_child, machine_info, run_part  # noqa: E402

HERE = os.path.abspath(__file__)

CONFIGS: dict[str, dict] = {
    "baseline (all controls off)": {},
    "qps=1e6": {"qps": 1_000_000},
    "msg_expire_seconds=3600": {"msg_expire_seconds": 3600},
    "do_task_filtering (memory state)": {"do_task_filtering": True},
    "function_timeout=60": {"function_timeout": 60},
    "status records (memory state)": {"function_result_status_persistence_conf": {"is_save_status": True}},
}
CONFIGS["common ones on (all five)"] = {k: v for cfg in list(CONFIGS.values()) for k, v in cfg.items()}
CONFIG_KEYS = list(CONFIGS)


class _Counter:
    def __init__(self, target: int) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.target = target
        self.done = threading.Event()

    def hit(self) -> None:
        with self.lock:
            self.n += 1
            if self.n >= self.target:
                self.done.set()


def _params(queue: str, threads: int, **cfg):
    from funboost import BoosterParams
    return BoosterParams(queue_name=queue, broker_kind="memory", concurrent_num=threads, state_backend="memory",
                         log_to_console=False, **cfg)


# ---------------------------------------------------------------- parts (fresh processes)
def part_config(index: int, n: int, threads: int) -> None:
    from funboost import boost
    cfg = CONFIGS[CONFIG_KEYS[index]]
    c = _Counter(n)

    @boost(_params(f"controls_{index}_{uuid.uuid4().hex[:8]}", threads, **cfg))
    def noop(x: int) -> None:
        c.hit()

    noop.push_many(range(n))  # distinct arguments: the filter never drops one
    t = time.perf_counter()
    noop.consume()
    if not c.done.wait(1800):
        raise SystemExit(f"only {c.n}/{n} ran")
    emit({"consume": n / (time.perf_counter() - t)})


def part_async(n: int, conc: int) -> None:
    from funboost import ConcurrentModeEnum, boost
    c = _Counter(n)

    @boost(_params(f"controls_async_{uuid.uuid4().hex[:8]}", conc, concurrent_mode=ConcurrentModeEnum.ASYNC))
    async def noop(x: int) -> None:
        c.hit()

    noop.push_many(range(n))
    t = time.perf_counter()
    noop.consume()
    if not c.done.wait(1800):
        raise SystemExit(f"only {c.n}/{n} ran")
    emit({"consume": n / (time.perf_counter() - t)})


def part_async_floor(n: int) -> None:
    """A bare event loop in its own thread, fed coroutines one by one from another thread."""
    import asyncio
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    c = _Counter(n)

    async def noop(x: int) -> None:
        c.hit()

    t = time.perf_counter()
    for i in range(n):
        asyncio.run_coroutine_threadsafe(noop(i), loop)
    c.done.wait(600)
    emit({"consume": n / (time.perf_counter() - t)})


def part_guards(n: int) -> None:
    """Per-message cost of each control's OFF guard vs the whole engine path, inline, one thread."""
    from funboost import boost
    from funboost.engine.consumer import Consumer

    @boost(_params(f"controls_guards_{uuid.uuid4().hex[:8]}", 50))
    def noop(x: int) -> None:
        pass

    consumer = Consumer(noop)  # not started: no dispatch thread, we drive it by hand
    broker = consumer.broker
    count = max(2000, n // 2)
    batch = 50
    noop.push_many(range(count * 6))

    def engine_inline() -> None:
        for d in broker.fetch(batch, 0):
            task = consumer.prepare(d)
            if task is not None:
                consumer.runner.run(task)
    base = best_us_per_call(engine_inline, count // batch, per_call=batch)

    # a representative decoded message and the objects the guards read
    d = broker.fetch(1, 0)[0]
    task = consumer.prepare(d)
    assert task is not None
    p, c, extra = consumer.params, consumer, task.msg.extra
    tid = task.task_id
    loops = 200_000

    def g_qps() -> None:  # Consumer.submit
        if c.rate.qps:
            pass

    def g_expire() -> None:  # Consumer.prepare
        expire = extra.get("msg_expire_seconds", p.msg_expire_seconds)
        if expire:
            pass

    def g_filter() -> None:  # Consumer._after_delay_checks and Consumer.finish_task
        if extra.get("do_task_filtering", p.do_task_filtering):
            pass
        if extra.get("do_task_filtering", p.do_task_filtering):
            pass

    def g_timeout() -> None:  # _Attempts.__init__ and Runner._call_sync
        timeout = extra.get("function_timeout", p.function_timeout)
        if c.runner._plain_call and not timeout:
            pass

    def g_status() -> None:  # Consumer.finish_task (status saver, custom recorder, after-hook in one flag)
        if c._plain_finish:
            pass

    def g_kill() -> None:  # Consumer.prepare (remote kill list)
        if tid in c.kill_set:
            pass

    def g_delay() -> None:  # Consumer.prepare and handle_delivery (countdown / eta)
        if "eta" in extra or "countdown" in extra:
            pass
        if extra.get("_eta") is not None:
            pass

    def g_rpc() -> None:  # Consumer.finish_task
        if extra.get("is_using_rpc_mode", p.is_using_rpc_mode):
            pass

    def g_empty() -> None:  # the cost of the timing loop itself, subtracted
        pass

    empty = best_us_per_call(g_empty, loops)
    out = {"engine inline per message (baseline), µs": base}
    for name, fn in (("qps", g_qps), ("msg_expire_seconds", g_expire), ("do_task_filtering", g_filter),
                     ("function_timeout", g_timeout), ("status records", g_status), ("remote kill list", g_kill),
                     ("countdown / eta", g_delay), ("rpc mode", g_rpc)):
        out[name] = max(0.0, best_us_per_call(fn, loops) - empty)
    consumer.acker.stop()
    consumer.executor.shutdown(wait=False)
    emit(out)


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2, help="fresh-process runs of each figure (default 2)")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        name, *rest = a.part
        args = [int(x) for x in rest]
        {"config": part_config, "async": part_async, "async_floor": part_async_floor,
         "guards": part_guards}[name](*args)
        finish_child()
        return

    n, th, rep = a.n, a.threads, a.repeat
    print(f"controls benchmark: memory broker, N={n}, {th} threads, {rep} fresh-process run(s) per figure "
          f"(mean ± half range)")
    print(f"machine: {machine_info()}")
    print("(2 shared, noisy cores: other jobs run concurrently; read figures as ±30 %)\n", flush=True)

    S: dict[str, Samples] = {k: Samples() for k in CONFIG_KEYS}
    A: dict[str, Samples] = {}
    async_rows = [("threading mode, sync def no-op (= baseline)", None),
                  ("asyncio mode, async def no-op, 50 at once", ("async", n, 50)),
                  ("asyncio mode, async def no-op, 500 at once", ("async", n, 500)),
                  ("bare asyncio loop, run_coroutine_threadsafe (floor)", ("async_floor", n))]
    for run in range(rep):
        print(f"run {run + 1}/{rep} ...", flush=True)
        # interleave the configurations so that a noisy spell hits them alike
        for i, key in enumerate(CONFIG_KEYS):
            res = run_part(HERE, "config", i, n, th)
            S[key].add(res and res["consume"], res and res["rss_mb"])
        for label, args in async_rows:
            if args is None:
                continue
            res = run_part(HERE, *args)
            A.setdefault(label, Samples()).add(res and res["consume"], res and res["rss_mb"])
    A[async_rows[0][0]] = S[CONFIG_KEYS[0]]

    base = S[CONFIG_KEYS[0]]
    print("\nconsume throughput with controls ON (cost = 1 - rate / baseline)")
    for key in CONFIG_KEYS:
        s = S[key]
        cost = "" if key == CONFIG_KEYS[0] or not (s.ok and base.ok) else f"  cost {100 * (1 - s.mean / base.mean):5.1f} %"
        print(f"  {key:<36} {s.fmt()}{cost}")

    print("\ncost when OFF: per-message guard time vs the whole engine path (inline, one thread, best of 5)")
    guards = [g for g in (run_part(HERE, "guards", n) for _ in range(rep)) if g]
    if guards:
        bkey = "engine inline per message (baseline), µs"
        b = Samples()
        for g in guards:
            b.add(g[bkey])
        print(f"  {'engine path per message (baseline)':<36} {b.fmt('µs', digits=2)}")
        worst = 0.0
        for key in guards[0]:
            if key in (bkey, "rss_mb"):
                continue
            s = Samples()
            for g in guards:
                s.add(g[key])
            pct = 100 * s.mean / b.mean
            worst = max(worst, pct)
            print(f"  {key + ' off':<36} {s.fmt('µs', digits=3)}  = {pct:4.2f} % of a message")
        print(f"  target: no control costs > 10 % when off -> worst {worst:.2f} %: "
              f"{'MET' if worst <= 10 else 'NOT MET'}")

    print("\nasyncio mode")
    for label, _ in async_rows:
        print(f"  {label:<52} {A.get(label, Samples()).fmt()}")


if __name__ == "__main__":
    main()
