"""Redis benchmark: raw redis-py, funboost-redis kinds, and the original funboost 55.0, side by side.

    bench/.venvs/ours/bin/python bench/redis_bench.py [N]        (default N = 20000)

Each figure runs in its own subprocess; the peak RSS of that process is printed beside it. The original
funboost runs in its own virtualenv (FUNBOOST_ORIG_PYTHON, default bench/.venvs/orig/bin/python) in a
scratch directory, because it writes config files into its working directory. Needs a redis-server at
FUNBOOST_REDIS_URL (default redis://127.0.0.1:6379/0). Timings are noisy on a 2-core machine (±30 %).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
ORIG_PY = os.environ.get("FUNBOOST_ORIG_PYTHON", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venvs", "orig", "bin", "python"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(rate: float) -> None:
    print("RESULT " + json.dumps({"rate": rate, "rss": rss_mb()}), flush=True)


# ------------------------------------------------------------------ parts (run in a child process)
def part_raw_lpush(n: int) -> None:
    import redis
    r = redis.Redis.from_url(URL)
    key = f"bench:{uuid.uuid4().hex}"
    body = json.dumps({"x": 1, "extra": {"task_id": uuid.uuid4().hex, "publish_time": time.time()}})
    t = time.perf_counter()
    for i in range(0, n, 1000):
        p = r.pipeline(transaction=False)
        for _ in range(min(1000, n - i)):
            p.lpush(key, body)
        p.execute()
    emit(n / (time.perf_counter() - t))
    r.delete(key)


def part_raw_lrange_ltrim(n: int) -> None:
    import redis
    r = redis.Redis.from_url(URL)
    key = f"bench:{uuid.uuid4().hex}"
    body = json.dumps({"x": 1, "extra": {"task_id": uuid.uuid4().hex, "publish_time": time.time()}})
    for i in range(0, n, 1000):
        r.lpush(key, *([body] * min(1000, n - i)))
    got = 0
    t = time.perf_counter()
    while got < n:
        p = r.pipeline(transaction=True)
        p.lrange(key, -1000, -1)
        p.ltrim(key, 0, -1001)
        vals, _ = p.execute()
        for v in vals:
            json.loads(v)
        got += len(vals)
    emit(n / (time.perf_counter() - t))


def _booster(kind: str, q: str, counter: list, lock: threading.Lock, conc: int = 50, **extra_cfg):
    from funboost import BoosterParams, boost

    cfg = {"url": URL, **extra_cfg}

    @boost(BoosterParams(queue_name=q, broker_kind=kind, broker_exclusive_config=cfg, concurrent_num=conc,
                         state_backend="memory", log_to_console=False, log_level=30, max_retry_times=0))
    def add(x: int, y: int = 1) -> int:
        with lock:
            counter[0] += 1
        return x + y
    return add


def part_ours_push(n: int, kind: str) -> None:
    q = f"bench_{uuid.uuid4().hex[:8]}"
    f = _booster(kind, q, [0], threading.Lock())
    t = time.perf_counter()
    for i in range(n):
        f.push(i)
    emit(n / (time.perf_counter() - t))
    f.clear()


def part_ours_push_linger(n: int, kind: str) -> None:
    q = f"bench_{uuid.uuid4().hex[:8]}"
    f = _booster(kind, q, [0], threading.Lock(), linger_ms=5)
    t = time.perf_counter()
    for i in range(n):
        f.push(i)
    f.broker.flush()
    emit(n / (time.perf_counter() - t))
    f.clear()


def part_ours_batch(n: int, kind: str) -> None:
    q = f"bench_{uuid.uuid4().hex[:8]}"
    f = _booster(kind, q, [0], threading.Lock())
    t = time.perf_counter()
    f.push_many(range(n))
    emit(n / (time.perf_counter() - t))
    f.clear()


def part_ours_consume(n: int, kind: str) -> None:
    q = f"bench_{uuid.uuid4().hex[:8]}"
    counter, lock = [0], threading.Lock()
    f = _booster(kind, q, counter, lock)
    f.push_many(range(n))
    t = time.perf_counter()
    f.consume()
    while counter[0] < n:
        time.sleep(0.002)
    emit(n / (time.perf_counter() - t))
    f.stop_consume(10)
    f.clear()


def part_broker_batch(n: int, kind: str) -> None:
    """Broker level, without the engine: publish 1000 envelopes per call, then fetch+ack in batches."""
    from funboost.plugins.broker import OutgoingMessage
    from funboost.plugins.manager import resolve_broker_kind
    cls = resolve_broker_kind(kind)
    b = cls(f"bench_{uuid.uuid4().hex[:8]}", cls.parse_options({"url": URL}))
    msgs = [OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": uuid.uuid4().hex}})) for i in range(n)]
    t = time.perf_counter()
    for i in range(0, n, 1000):
        b.publish(msgs[i:i + 1000])
    pub = n / (time.perf_counter() - t)
    got = 0
    t = time.perf_counter()
    while got < n:
        ds = b.fetch(500, 1.0)
        b.ack(ds)
        got += len(ds)
    print("RESULT2 " + json.dumps({"rate": n / (time.perf_counter() - t), "rss": rss_mb()}), flush=True)
    emit(pub)
    b.purge()
    b.close()


ORIG_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys, threading, time, uuid
    from funboost import boost, BrokerEnum, BoosterParams
    mode, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counter, lock = [0], threading.Lock()
    q = "bench_orig_" + uuid.uuid4().hex[:8]

    @boost(BoosterParams(queue_name=q, broker_kind=getattr(BrokerEnum, kind), concurrent_num=50, log_level=30,
                         is_show_message_get_from_broker=False))
    def add(x, y=1):
        with lock:
            counter[0] += 1
        return x + y

    def emit(rate):
        print("RESULT " + json.dumps({"rate": rate, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
              flush=True)

    t = time.perf_counter()
    for i in range(n):
        add.push(i)
    # buffered publishers: wait until the broker holds everything
    while add.get_message_count() < n and time.perf_counter() - t < 120:
        time.sleep(0.005)
    pub = n / (time.perf_counter() - t)
    if mode == "push":
        emit(pub)
        add.clear()
        os._exit(0)
    t = time.perf_counter()
    add.consume()
    while counter[0] < n and time.perf_counter() - t < 300:
        time.sleep(0.002)
    emit(n / (time.perf_counter() - t))
    add.clear()
    os._exit(0)
""")


def run_orig(mode: str, kind: str, n: int) -> dict | None:
    if not os.path.exists(ORIG_PY):
        return None
    d = tempfile.mkdtemp(prefix="funboost-orig-")
    env = dict(os.environ, PYTHONPATH=d)
    script = os.path.join(d, "orig_bench.py")  # the original inspects its functions' source
    with open(script, "w") as fh:
        fh.write(ORIG_SCRIPT)
    p = subprocess.run([ORIG_PY, script, mode, kind, str(n)], cwd=d, env=env, capture_output=True,
                       text=True, timeout=600)
    return _parse(p)


def _parse(p: subprocess.CompletedProcess) -> dict | None:
    for line in p.stdout.splitlines():
        if "RESULT " in line:
            return json.loads(line.split("RESULT ", 1)[1].split("\x1b")[0].strip())
    sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
    return None


CELERY_PY = os.environ.get("FUNBOOST_CELERY_PYTHON", sys.executable)  # bench/.venvs/ours has Celery


def run_celery(n: int) -> tuple[dict | None, dict | None]:
    """Plain Celery on the same Redis, through bench/celery_bench.py in a venv that has Celery
    (FUNBOOST_CELERY_PYTHON); RSS is not reported by that script."""
    if not os.path.exists(CELERY_PY):
        return None, None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "celery_bench.py")
    url = os.environ.get("FUNBOOST_CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/13")
    p = subprocess.run([CELERY_PY, script, "--part", "plain", "--url", url, "--n", str(n), "--concurrency", "8"],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-2000:])
        return None, None
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"rate": r["publish"], "rss": 0.0}, {"rate": r["consume"], "rss": 0.0}


def run_part(name: str, n: int, *args: str) -> dict | None:
    p = subprocess.run([sys.executable, __file__, "--part", name, str(n), *args], capture_output=True, text=True,
                       timeout=600)
    return _parse(p)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rows: list[tuple[str, str, dict | None]] = []

    def row(label: str, what: str, res: dict | None) -> None:
        rows.append((label, what, res))
        fig = f"{res['rate']:>10,.0f} msg/s   peak RSS {res['rss']:6.1f} MB" if res else "   (not run)"
        print(f"{label:<46} {what:<8} {fig}", flush=True)

    print(f"N = {n}, redis = {URL}")
    row("raw redis-py pipelined LPUSH x1000", "publish", run_part("raw_lpush", n))
    row("raw redis-py LRANGE+LTRIM x1000", "consume", run_part("raw_lrange_ltrim", n))
    for kind in ("redis", "redis_ack_able", "redis_stream"):
        p = subprocess.run([sys.executable, __file__, "--part", "broker_batch", str(n), kind], capture_output=True,
                           text=True, timeout=600)
        row(f"broker-level {kind} publish x1000 (no engine)", "publish", _parse(p))
        fa = [json.loads(x.split("RESULT2 ", 1)[1]) for x in p.stdout.splitlines() if x.startswith("RESULT2 ")]
        row(f"broker-level {kind} fetch+ack x500 (no engine)", "consume", fa[0] if fa else None)
    for kind in ("redis", "redis_ack_able", "redis_priority", "redis_stream"):
        row(f"funboost-redis {kind} push one by one", "publish", run_part("ours_push", n, kind))
        if kind in ("redis", "redis_ack_able"):
            row(f"funboost-redis {kind} push, linger_ms=5", "publish", run_part("ours_push_linger", n, kind))
        row(f"funboost-redis {kind} push_many", "publish", run_part("ours_batch", n, kind))
        row(f"funboost-redis {kind} consume (engine)", "consume", run_part("ours_consume", n, kind))
    for kind in ("REDIS", "REDIS_ACK_ABLE"):
        row(f"original funboost 55.0 {kind} push", "publish", run_orig("push", kind, n))
        row(f"original funboost 55.0 {kind} consume", "consume", run_orig("consume", kind, n))
    pub, con = run_celery(min(n, 3000))
    row("plain Celery 5 on Redis (.delay(), threads 8)", "publish", pub)
    row("plain Celery 5 on Redis (threads 8, acks_late)", "consume", con)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--part":
        name, n = sys.argv[2], int(sys.argv[3])
        globals()["part_" + name](n, *sys.argv[4:])
    else:
        main()
