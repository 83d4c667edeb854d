"""Cost as work grows: backlog size, consumer processes, memory per held message (issue 24, items 5 and 6).

    python bench/scale_bench.py [--quick] [--kinds sqlite,redis_ack_able,rabbitmq,kafka]
                                [--backlogs 1000,100000,1000000] [--only backlog,procs,memory] [--no-docs]

(Run it with the interpreter of ``bench/.venvs/ours``, which ``python bench/run_all.py --setup-only``
creates; ``run_all.py`` runs this script too.)

backlog   for each kind and backlog size B: a fresh queue filled with B (+ what the probes take) messages by
          ``push_many`` (the plugins' batch publish), then, with at least B messages still waiting:
          ``queue_size()`` latency; ``push`` one by one (µs per message); the broker's ``fetch(100)`` +
          ``ack`` from the head of the queue (µs per message); the engine consuming a few thousand of them
          (msg/s, first to last task). Cost is flat when the figures at 1,000,000 equal those at 1,000.
          Sizes run in alternating order over ``--backlog-rounds`` rounds (medians).
procs     consume throughput of 1 and 2 consumer processes on one pre-filled queue (no-op function,
          default concurrency); the processes connect first and start together; rate = messages / (last
          task's end - first task's start over all processes). 1 and 2 alternate over ``--proc-rounds``.
          CPU seconds per message of the consumers (and of redis-server for redis kinds) are reported:
          on a 2-core machine shared with other jobs, the second process only helps while a core is free.
memory    RSS (VmRSS) of a consumer holding 10,000 tasks it has taken from the broker and not finished (the
          function waits on an event): threads (concurrent_num=10000) and asyncio (concurrent_mode=async,
          concurrent_num=10000); and of a publisher before and after 1,000,000 pushes one by one.

Every measurement runs in fresh processes in a scratch directory; queues have unique names and are
deleted afterwards (shared servers: nothing is flushed). Plots (matplotlib) go to docs/bench/*.png and the
tables into the region between ``<!-- scale_bench:begin -->`` and ``<!-- scale_bench:end -->`` of
docs/benchmarks.md. Nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Optional

HERE = os.path.abspath(__file__)
BENCH_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
from _common import emit, machine_info, named_processes_cpu, parse_result, scratch_env  # noqa: E402

REDIS_URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FUNBOOST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
KAFKA = os.environ.get("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "sqlite": {},
    "redis_ack_able": {"url": REDIS_URL},
    "rabbitmq": {"url": AMQP_URL},
    "kafka": {"bootstrap_servers": KAFKA, "num_partitions": 3, "session_timeout_ms": 6000,
              "heartbeat_interval_ms": 1500},
}
SERVICE = {"redis_ack_able": "redis", "rabbitmq": "rabbitmq", "kafka": "kafka"}
BEGIN, END = "<!-- scale_bench:begin -->", "<!-- scale_bench:end -->"


# ---------------------------------------------------------------- helpers inside a child
def rss_now_mb() -> float:
    """Current resident set size (VmRSS), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def redis_server_cpu() -> float:
    """CPU seconds used so far by local redis-server processes (nan if none can be read)."""
    return named_processes_cpu("redis-server")


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.first = 0.0
        self.last = 0.0

    def hit(self) -> None:
        with self.lock:
            now = time.time()
            if not self.n:
                self.first = now
            self.n += 1
            self.last = now


def make_booster(kind: str, q: str, fn, **params: Any):
    from funboost import BoosterParams, boost
    return boost(BoosterParams(queue_name=q, broker_kind=kind, broker_exclusive_config=KIND_OPTIONS[kind],
                               state_backend="memory", log_to_console=False, log_level=30, max_retry_times=0,
                               **params))(fn)


def wait_until(cond, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def drop_queue(booster) -> None:
    """Leave nothing behind on the shared servers."""
    b = booster.broker
    try:
        b.purge()
    except Exception:
        pass
    if hasattr(b, "delete_queues"):
        try:
            b.delete_queues()
        except Exception:
            pass
    if booster.params.broker_kind == "kafka":
        try:
            from kafka.admin import KafkaAdminClient
            admin = KafkaAdminClient(bootstrap_servers=KAFKA.split(","))
            admin.delete_topics([booster.queue_name])
            admin.close()
        except Exception:
            pass


# ---------------------------------------------------------------- parts (each in a fresh process)
def part_backlog(kind: str, backlog: int, probe: int, consume_n: int) -> dict:
    c = Counter()

    def noop(x: int) -> None:
        c.hit()

    f = make_booster(kind, f"scale_bl_{uuid.uuid4().hex[:10]}", noop)
    fill = backlog + probe + consume_n  # at least `backlog` stay waiting during every probe
    t = time.perf_counter()
    for start in range(0, fill, 100_000):  # push_many keeps a result per message: fill in slices
        f.push_many(range(start, min(fill, start + 100_000)), batch_size=1000)
    fill_rate = fill / (time.perf_counter() - t)
    gc.collect()
    wait_until(lambda: (f.broker.queue_size().ready or 0) >= fill, 120, 0.05)
    qs = []
    for _ in range(20):
        t = time.perf_counter()
        size = f.broker.queue_size()
        qs.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for i in range(probe):
        f.push(i)
    push_us = (time.perf_counter() - t) / probe * 1e6
    # a broker instance of its own, closed before the engine starts: a Kafka group member that stops
    # polling would hold its partitions until max.poll.interval.ms and stall the engine's consumer
    b = type(f.broker)(f.queue_name, f.broker.options)
    got, first_fetch = 0, None
    t0 = time.perf_counter()
    while not got:  # the first fetch may join a consumer group / open a channel: not part of the rate
        ds = b.fetch(100, 1.0)
        b.ack(ds)
        got += len(ds)
        first_fetch = time.perf_counter() - t0
    t = time.perf_counter()
    while got < probe:
        ds = b.fetch(100, 1.0)
        b.ack(ds)
        got += len(ds)
    fetch_ack_us = (time.perf_counter() - t) / max(1, got - 100) * 1e6
    b.close()
    f.consume()
    wait_until(lambda: c.n >= consume_n, 600, 0.002)
    consume_rate = (c.n - 1) / (c.last - c.first) if c.n > 1 and c.last > c.first else None
    f.stop_consume(10)
    remaining = size.ready
    drop_queue(f)
    return {"kind": kind, "backlog": backlog, "fill_rate": fill_rate, "queue_size_ms": statistics.median(qs),
            "push_us": push_us, "fetch_ack_us": fetch_ack_us, "first_fetch_s": first_fetch,
            "consume_rate": consume_rate, "ready_seen": remaining}


def part_fill(kind: str, q: str, n: int) -> dict:
    f = make_booster(kind, q, lambda x: None)
    f.push_many(range(n), batch_size=1000)
    wait_until(lambda: (f.broker.queue_size().ready or 0) >= n, 120, 0.05)
    return {"filled": n}


def part_drop(kind: str, q: str) -> dict:
    drop_queue(make_booster(kind, q, lambda x: None))
    return {"dropped": q}


def part_consumer(kind: str, q: str) -> None:
    """One of the processes of the 1-vs-2 comparison: connect, say READY, start on "go", consume until
    the queue is empty and nothing ran for a second, report count / first / last / CPU."""
    c = Counter()

    def noop(x: int) -> None:
        c.hit()

    f = make_booster(kind, q, noop)
    f.broker.queue_size()  # connect before the start signal
    os.write(1, b"READY\n")
    sys.stdin.readline()
    cpu0, srv0 = cpu_seconds(), redis_server_cpu()
    f.consume()
    seen, still_since = -1, time.monotonic()
    while True:
        time.sleep(0.05)
        if c.n != seen:
            seen, still_since = c.n, time.monotonic()
            continue
        if time.monotonic() - still_since > 1.0 and (f.broker.queue_size().ready or 0) == 0:
            break
    cpu = cpu_seconds() - cpu0
    f.stop_consume(10)
    emit({"n": c.n, "first": c.first, "last": c.last, "cpu_s": cpu, "redis_cpu_s": redis_server_cpu() - srv0})


def part_spin(seconds: str) -> dict:
    """Busy-loop for ``seconds`` of wall time; the CPU time it got says how much of a core was free."""
    cpu0, t_end = cpu_seconds(), time.time() + float(seconds)
    while time.time() < t_end:
        pass
    return {"cpu_s": cpu_seconds() - cpu0, "wall_s": float(seconds)}


def free_cores(seconds: float = 1.0) -> Optional[float]:
    """Two busy loops side by side: the CPU seconds they got per wall second (2.0 = both cores free)."""
    ps = [subprocess.Popen([sys.executable, HERE, "--part", "spin", str(seconds)], stdout=subprocess.PIPE,
                           text=True) for _ in range(2)]
    res = [parse_result(p.communicate()[0]) for p in ps]
    if any(r is None for r in res):
        return None
    return sum(r["cpu_s"] for r in res) / seconds


def part_memory_held(kind: str, mode: str, held: int) -> dict:
    """RSS of a consumer holding ``held`` tasks taken from the broker and not finished."""
    started = Counter()
    if mode == "async":
        import asyncio
        box: dict[str, Any] = {}

        async def hold(x: int) -> None:
            if "ev" not in box:
                box["loop"], box["ev"] = asyncio.get_running_loop(), asyncio.Event()
            started.hit()
            await box["ev"].wait()
            done.hit()

        def release() -> None:
            box["loop"].call_soon_threadsafe(box["ev"].set)
        params = {"concurrent_mode": "async", "concurrent_num": held}
        fn = hold
    else:
        gate = threading.Event()

        def hold(x: int) -> None:  # type: ignore[no-redef]
            started.hit()
            gate.wait(600)
            done.hit()

        release = gate.set
        params = {"concurrent_num": held}
        fn = hold
    done = Counter()
    f = make_booster(kind, f"scale_mem_{uuid.uuid4().hex[:10]}", fn, **params)
    f.push_many(range(held), batch_size=1000)
    wait_until(lambda: (f.broker.queue_size().ready or 0) >= held, 120, 0.05)
    gc.collect()
    base = rss_now_mb()
    t = time.perf_counter()
    f.consume()
    ok = wait_until(lambda: started.n >= held, 300, 0.05)
    took = time.perf_counter() - t
    gc.collect()
    rss = rss_now_mb()
    release()
    wait_until(lambda: done.n >= started.n, 300, 0.05)
    f.stop_consume(30)
    drop_queue(f)
    return {"kind": kind, "mode": mode, "held": started.n, "reached": ok, "rss_before_mb": base,
            "rss_held_mb": rss, "kb_per_task": (rss - base) * 1024 / max(1, started.n), "seconds_to_fill": took}


def part_memory_publisher(kind: str, n: int) -> dict:
    f = make_booster(kind, f"scale_pub_{uuid.uuid4().hex[:10]}", lambda x: None)
    f.push(0)
    gc.collect()
    base = rss_now_mb()
    t = time.perf_counter()
    for i in range(n):
        f.push(i)
    rate = n / (time.perf_counter() - t)
    after = rss_now_mb()
    gc.collect()
    after_gc = rss_now_mb()
    drop_queue(f)
    return {"kind": kind, "pushes": n, "push_rate": rate, "rss_before_mb": base, "rss_after_mb": after,
            "rss_after_gc_mb": after_gc}


# ---------------------------------------------------------------- driver
def run_part(name: str, *args: Any, timeout: float = 3600, env_dir: Optional[str] = None) -> Optional[dict]:
    with tempfile.TemporaryDirectory(prefix="funboost-scale-") as d:
        d = env_dir or d
        try:
            p = subprocess.run([sys.executable, HERE, "--part", name, *map(str, args)], cwd=d,
                               env=scratch_env(d), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! {name}{args} timed out after {timeout:.0f} s", flush=True)
            return None
    res = parse_result(p.stdout)
    if res is None:
        print(f"  ! {name}{args} failed (rc={p.returncode}): {(p.stderr or p.stdout)[-800:]}", flush=True)
    return res


def procs_run(kind: str, n: int, procs: int) -> Optional[dict]:
    """Fill a queue, start ``procs`` consumer processes together, return the combined rate."""
    q = f"scale_mp_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="funboost-scale-mp-") as d:  # one sqlite dir for all of them
        env = scratch_env(d)
        if run_part("fill", kind, q, n, env_dir=d) is None:
            return None
        ps = [subprocess.Popen([sys.executable, HERE, "--part", "consumer", kind, q], cwd=d, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(procs)]
        try:
            for p in ps:
                for line in p.stdout:  # type: ignore[union-attr]
                    if line.strip() == "READY":
                        break
            for p in ps:
                p.stdin.write("go\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            outs = [p.communicate(timeout=1800) for p in ps]
        finally:
            for p in ps:
                if p.poll() is None:
                    p.kill()
        res = [parse_result(o[0]) for o in outs]
        run_part("drop", kind, q, env_dir=d)
    if any(r is None for r in res):
        print(f"  ! consumer processes failed: {[o[1][-500:] for o in outs]}", flush=True)
        return None
    total = sum(r["n"] for r in res)
    span = max(r["last"] for r in res if r["n"]) - min(r["first"] for r in res if r["n"])
    return {"rate": total / span if span > 0 else None, "total": total, "expected": n,
            "cores_used": sum(r["cpu_s"] for r in res) / span if span > 0 else None,
            "per_process": [r["n"] for r in res], "cpu_us_per_msg": sum(r["cpu_s"] for r in res) / total * 1e6,
            "redis_cpu_us_per_msg": res[0]["redis_cpu_s"] / total * 1e6,
            "rss_mb": max(r.get("rss_mb", 0) for r in res)}


def med(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2 or not statistics.median(xs):
        return None
    return (max(xs) - min(xs)) / 2 / statistics.median(xs) * 100


def fmt(x: Optional[float], digits: int = 0, sp: Optional[float] = None) -> str:
    if x is None:
        return "–"
    s = f"{x:,.{digits}f}"
    return s + (f" ±{sp:.0f} %" if sp is not None else "")


def service_ok(kind: str) -> Optional[str]:
    name = SERVICE.get(kind)
    if not name:
        return None
    from run_all import service_problem
    return service_problem(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="sqlite and redis_ack_able, backlogs 1,000 and 100,000, 100,000 pushes")
    ap.add_argument("--kinds", help="default: sqlite,redis_ack_able,rabbitmq,kafka")
    ap.add_argument("--backlogs", help="default 1000,100000,1000000")
    ap.add_argument("--backlog-rounds", type=int, default=None)
    ap.add_argument("--probe", type=int, default=2000, help="pushes and fetch+acks measured per backlog")
    ap.add_argument("--consume-n", type=int, default=5000, help="tasks the engine consumes per backlog")
    ap.add_argument("--proc-n", type=int, default=None, help="messages per 1-vs-2-process run")
    ap.add_argument("--proc-rounds", type=int, default=None)
    ap.add_argument("--proc-kinds", help="default: sqlite,redis_ack_able,rabbitmq")
    ap.add_argument("--held", type=int, default=10000)
    ap.add_argument("--pushes", type=int, default=None, help="pushes of the publisher memory figure")
    ap.add_argument("--only", help="subset of backlog,procs,memory")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--reuse", help="a bench/results/scale-*.json: keep its sections that --only does not re-run")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        name, *rest = a.part
        fn = globals()["part_" + name]
        conv = [int(x) if x.lstrip("-").isdigit() else x for x in rest]
        out = fn(*conv)
        if isinstance(out, dict):
            emit(out)
        sys.stdout.flush()
        os._exit(0)

    kinds = (a.kinds or ("sqlite,redis_ack_able" if a.quick else "sqlite,redis_ack_able,rabbitmq,kafka")).split(",")
    backlogs = [int(x) for x in (a.backlogs or ("1000,100000" if a.quick else "1000,100000,1000000")).split(",")]
    b_rounds = a.backlog_rounds or (1 if a.quick else 2)
    proc_n = a.proc_n or (20000 if a.quick else 50000)
    proc_rounds = a.proc_rounds or (1 if a.quick else 3)
    proc_kinds = (a.proc_kinds or ("sqlite,redis_ack_able" if a.quick else "sqlite,redis_ack_able,rabbitmq")).split(",")
    pushes = a.pushes or (100_000 if a.quick else 1_000_000)
    only = set((a.only or "backlog,procs,memory").split(","))  # "none" with --reuse: only redraw / rewrite
    skipped = {k: p for k in set(kinds) | set(proc_kinds) if (p := service_ok(k))}
    print(f"scale bench: machine {machine_info()}", flush=True)
    for k, p in skipped.items():
        print(f"  {k}: skipped ({p})")
    out: dict[str, Any] = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                                    "machine": machine_info(), "quick": a.quick, "probe": a.probe,
                                    "consume_n": a.consume_n, "proc_n": proc_n, "proc_rounds": proc_rounds,
                                    "backlog_rounds": b_rounds, "held": a.held, "pushes": pushes},
                           "backlog": [], "procs": [], "memory_held": [], "memory_publisher": []}

    if a.reuse:  # sections not re-run now come from an earlier run (their settings with them)
        with open(a.reuse) as fh:
            old = json.load(fh)
        for section, keys in (("backlog", ("probe", "consume_n", "backlog_rounds")), ("procs", ("proc_n", "proc_rounds")),
                              ("memory", ("held", "pushes"))):
            if section not in only:
                for name in ([section] if section != "memory" else ["memory_held", "memory_publisher"]):
                    out[name] = old.get(name, [])
                out["meta"].update({k: old["meta"][k] for k in keys if k in old["meta"]})
        out["meta"]["reused"] = os.path.basename(a.reuse)
        for section in ("backlog", "procs", "memory"):
            if section not in only:
                out["meta"].setdefault("sections", {})[section] = old["meta"].get("sections", {}).get(
                    section, old["meta"]["date"])
        kinds = list(dict.fromkeys([r["kind"] for r in out["backlog"]] + kinds))
        backlogs = sorted(set(backlogs) | {r["backlog"] for r in out["backlog"]})

    if "backlog" in only:
        print("\nbacklog: per-message cost with B messages waiting", flush=True)
        for kind in kinds:
            if kind in skipped:
                continue
            for r in range(b_rounds):
                for b in (backlogs if r % 2 == 0 else list(reversed(backlogs))):
                    t = time.perf_counter()
                    res = run_part("backlog", kind, b, a.probe, a.consume_n)
                    if res:
                        res["round"] = r
                        out["backlog"].append(res)
                        print(f"  {kind:<15} B={b:>9,}  fill {res['fill_rate']:>9,.0f}/s  queue_size "
                              f"{res['queue_size_ms']:6.2f} ms  push {res['push_us']:7.1f} µs  fetch+ack "
                              f"{res['fetch_ack_us']:6.1f} µs  consume {fmt(res['consume_rate'])}/s  "
                              f"({time.perf_counter() - t:.0f} s)", flush=True)

    if "procs" in only:
        print(f"\nprocesses: consume {proc_n:,} waiting messages with 1 and 2 consumer processes", flush=True)
        for kind in proc_kinds:
            if kind in skipped:
                continue
            for r in range(proc_rounds):
                free = free_cores()
                for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
                    res = procs_run(kind, proc_n, procs)
                    if res:
                        res.update(kind=kind, procs=procs, round=r, free_cores=free)
                        out["procs"].append(res)
                        print(f"  {kind:<15} {procs} process(es): {fmt(res['rate'])} msg/s  split "
                              f"{res['per_process']}  CPU {res['cpu_us_per_msg']:.0f} µs/msg "
                              f"(redis-server {res['redis_cpu_us_per_msg']:.0f}), consumers used "
                              f"{fmt(res['cores_used'], 2)} cores; free before the round: {fmt(free, 2)}",
                              flush=True)

    if "memory" in only:
        print(f"\nmemory: a consumer holding {a.held:,} unfinished tasks; a publisher after {pushes:,} pushes",
              flush=True)
        for kind in ("sqlite", "redis_ack_able"):
            if kind in skipped:
                continue
            for mode in ("threads", "async"):
                res = run_part("memory_held", kind, mode, a.held)
                if res:
                    out["memory_held"].append(res)
                    print(f"  {kind:<15} {mode:<8} held {res['held']:,}: RSS {res['rss_before_mb']:.0f} -> "
                          f"{res['rss_held_mb']:.0f} MB ({res['kb_per_task']:.1f} KB per task)", flush=True)
            res = run_part("memory_publisher", kind, pushes)
            if res:
                out["memory_publisher"].append(res)
                print(f"  {kind:<15} publisher: {pushes:,} pushes at {res['push_rate']:,.0f}/s, RSS "
                      f"{res['rss_before_mb']:.0f} -> {res['rss_after_mb']:.0f} MB (peak {res['rss_mb']:.0f})",
                      flush=True)

    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(BENCH_DIR, "results", f"scale-{stamp}.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    md = format_markdown(out, kinds, backlogs, skipped)
    print("\n" + md)
    if not a.no_docs:
        plots = make_plots(out, os.path.join(ROOT, "docs", "bench"))
        from run_all import DOC, replace_region
        with open(DOC) as fh:
            text = fh.read()
        with open(DOC, "w") as fh:
            fh.write(replace_region(text, md + "".join(f"\n\n![{t}](bench/{os.path.basename(p)})"
                                                       for t, p in plots), BEGIN, END))
        print(f"rewrote the scale region of docs/benchmarks.md; plots: {', '.join(p for _, p in plots)}")


def format_markdown(out: dict, kinds: list[str], backlogs: list[int], skipped: dict[str, str]) -> str:
    m = out["meta"]
    lines = [f"Generated by `python bench/scale_bench.py{' --quick' if m['quick'] else ''}` on {m['date']}; "
             f"{m['machine']}."]
    when = {sec: m.get("sections", {}).get(sec, m["date"]) for sec in ("backlog", "procs", "memory")}
    if len(set(when.values())) > 1:
        lines[0] += " Measured: " + "; ".join(f"{sec} {d}" for sec, d in when.items()) + \
            " (`--reuse` kept the sections that were not re-run; load averages differ between them)."
    if skipped:
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".")
    if out["backlog"]:
        lines += ["", f"**Backlog** ({m['backlog_rounds']} round(s), sizes in alternating order; medians): "
                  f"cost per message with B messages waiting. push = `push` one by one ({m['probe']:,}); "
                  f"fetch+ack = the broker's `fetch(100)` + `ack` ({m['probe']:,}); consume = the engine, "
                  f"{m['consume_n']:,} tasks, first to last.", "",
                  "| kind | backlog B | fill (push_many) msg/s | queue_size() ms | push µs/msg | fetch+ack µs/msg "
                  "| consume msg/s |", "|---|---:|---:|---:|---:|---:|---:|"]
        for kind in kinds:
            for b in backlogs:
                rs = [r for r in out["backlog"] if r["kind"] == kind and r["backlog"] == b]
                if not rs:
                    continue
                g = {k: [r[k] for r in rs] for k in ("fill_rate", "queue_size_ms", "push_us", "fetch_ack_us",
                                                      "consume_rate")}
                lines.append(f"| {kind} | {b:,} | {fmt(med(g['fill_rate']))} | {fmt(med(g['queue_size_ms']), 2)} | "
                             f"{fmt(med(g['push_us']), 1, spread(g['push_us']))} | "
                             f"{fmt(med(g['fetch_ack_us']), 1, spread(g['fetch_ack_us']))} | "
                             f"{fmt(med(g['consume_rate']), 0, spread(g['consume_rate']))} |")
    if out["procs"]:
        lines += ["", f"**Consumer processes** ({m['proc_n']:,} waiting messages, no-op function, default "
                  f"concurrency; {m['proc_rounds']} alternating rounds; medians ± half the range). Target for "
                  "redis and sqlite: 2 processes ≥ 1.7× one.", "",
                  "| kind | 1 process msg/s | 2 processes msg/s | 2 ÷ 1 (per round) | consumer CPU µs/msg (1 / 2) "
                  "| redis-server CPU µs/msg (1 / 2) | cores the consumers used (1 / 2) | free cores measured "
                  "before each round |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for kind in dict.fromkeys(r["kind"] for r in out["procs"]):
            one = [r for r in out["procs"] if r["kind"] == kind and r["procs"] == 1]
            two = [r for r in out["procs"] if r["kind"] == kind and r["procs"] == 2]
            ratios = [t["rate"] / o["rate"] for o in one for t in two if t["round"] == o["round"]
                      and o["rate"] and t["rate"]]
            rs = ", ".join(f"{x:.2f}" for x in ratios)
            verdict = ""
            if kind in ("sqlite", "redis_ack_able") and ratios:
                verdict = ": met" if statistics.median(ratios) >= 1.7 else ": NOT met"
            srv = (f"{fmt(med([r['redis_cpu_us_per_msg'] for r in one]))} / "
                   f"{fmt(med([r['redis_cpu_us_per_msg'] for r in two]))}") if kind.startswith("redis") else "–"
            lines.append(f"| {kind} | {fmt(med([r['rate'] for r in one]), 0, spread([r['rate'] for r in one]))} | "
                         f"{fmt(med([r['rate'] for r in two]), 0, spread([r['rate'] for r in two]))} | "
                         f"{fmt(med(ratios), 2)}× ({rs}){verdict} | "
                         f"{fmt(med([r['cpu_us_per_msg'] for r in one]))} / "
                         f"{fmt(med([r['cpu_us_per_msg'] for r in two]))} | {srv} | "
                         f"{fmt(med([r.get('cores_used') for r in one]), 2)} / "
                         f"{fmt(med([r.get('cores_used') for r in two]), 2)} | "
                         f"{', '.join(fmt(r.get('free_cores'), 2) for r in one)} |")
    if out["memory_held"] or out["memory_publisher"]:
        lines += ["", f"**Memory** (VmRSS of the process; one run each). Held: a consumer that has taken "
                  f"{m['held']:,} tasks whose function waits on an event (threads: concurrent_num={m['held']:,}; "
                  f"async: concurrent_mode=async, concurrent_num={m['held']:,}). Publisher: `push` one by one "
                  f"{m['pushes']:,} times.", "",
                  "| kind | what | RSS before MB | RSS after MB | per message | rate |", "|---|---|---:|---:|---:|---:|"]
        for r in out["memory_held"]:
            lines.append(f"| {r['kind']} | consumer holding {r['held']:,} tasks, {r['mode']} | {r['rss_before_mb']:.0f} "
                         f"| {r['rss_held_mb']:.0f} | {r['kb_per_task']:.1f} KB | filled in {r['seconds_to_fill']:.1f} s |")
        for r in out["memory_publisher"]:
            per = (r["rss_after_mb"] - r["rss_before_mb"]) * 1024 * 1024 / r["pushes"]
            lines.append(f"| {r['kind']} | publisher after {r['pushes']:,} pushes | {r['rss_before_mb']:.0f} | "
                         f"{r['rss_after_mb']:.0f} | {per:.1f} bytes | {r['push_rate']:,.0f} push/s |")
    return "\n".join(lines)


def make_plots(out: dict, directory: str) -> list[tuple[str, str]]:
    """PNG plots of consume and fetch+ack throughput against backlog, and of throughput against processes."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib not installed: no plots)")
        return []
    os.makedirs(directory, exist_ok=True)
    made = []
    if out["backlog"]:
        fig, axes = plt.subplots(1, 4, figsize=(19, 4.5))
        for kind in dict.fromkeys(r["kind"] for r in out["backlog"]):
            rs = [r for r in out["backlog"] if r["kind"] == kind]
            sizes = sorted({r["backlog"] for r in rs})
            for ax, key, conv in ((axes[0], "consume_rate", lambda v: v),
                                  (axes[1], "fetch_ack_us", lambda v: 1e6 / v if v else None),
                                  (axes[2], "push_us", lambda v: 1e6 / v if v else None),
                                  (axes[3], "queue_size_ms", lambda v: v)):
                ys = [med([conv(r[key]) for r in rs if r["backlog"] == b]) for b in sizes]
                ax.plot(sizes, ys, marker="o", label=kind)
        for ax, title in zip(axes, ("engine consume", "broker fetch(100)+ack", "push one by one",
                                    "queue_size() latency (lower is better)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("messages waiting (backlog)")
            ax.set_ylabel("ms per call" if title.startswith("queue_size") else "msg/s")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend()
        fig.suptitle("Throughput and queue_size() against backlog size (flat = independent of the backlog; "
                     "medians of the rounds)")
        fig.tight_layout()
        path = os.path.join(directory, "backlog.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(("throughput against backlog size", path))
    if out["procs"]:
        kinds = list(dict.fromkeys(r["kind"] for r in out["procs"]))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.38
        for i, procs in enumerate((1, 2)):
            vals = [med([r["rate"] for r in out["procs"] if r["kind"] == k and r["procs"] == procs]) or 0
                    for k in kinds]
            ax.bar([x + (i - 0.5) * width for x in range(len(kinds))], vals, width, label=f"{procs} process(es)")
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels(kinds)
        ax.set_ylabel("consume msg/s (median)")
        ax.set_title("Consume throughput against consumer processes (2 shared cores)")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(directory, "processes.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(("throughput against consumer processes", path))
    return made


if __name__ == "__main__":
    main()
