"""Benchmark of the sqlite broker (funboost-sqlite) beside raw sqlite3 and the original funboost 55.0.

    bench/.venvs/ours/bin/python bench/sqlite_bench.py [--n 20000] [--orig-n 20000] [--no-orig]

Prints msg/s for:
  raw sqlite3          one INSERT transaction per message (explicit and autocommit) / executemany batches
                       (the physical ceiling, same table shape and index, no Python broker code)
  broker level         SqliteBroker.publish one by one and in batches of 1000; fetch(50)+ack, one thread;
                       fetch+ack by 2 consumer processes at once (file_lock on and off)
  end to end           @boost(BoosterParams(broker_kind="SQLITE_QUEUE", concurrent_num=50)): push N no-op
                       tasks one by one, then consume them
  original 55.0        the same end-to-end run on funboost==55.0 SQLITE_QUEUE, in its own venv
                       (FUNBOOST_ORIG_PYTHON, default bench/.venvs/orig/bin/python)

Every part runs in a fresh process with its own temporary database directory. Durability is the default
(WAL, synchronous=NORMAL). Timings are noisy on a small machine: read them as +-30 %.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import RunCounter, broker_rates, push_then_consume

HERE = os.path.abspath(__file__)
ORIG_PYTHON = os.environ.get("FUNBOOST_ORIG_PYTHON", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venvs", "orig", "bin", "python"))
BODY = json.dumps({"x": 1, "extra": {"task_id": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
                                      "publish_time": 1700000000.1234}})


# ---------------------------------------------------------------- parts (each runs in a subprocess)
def part_raw(n: int) -> dict:
    import sqlite3
    path = os.path.join(os.environ["FUNBOOST_SQLITE_DIR"], "raw.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, q TEXT, s INT, p INT, a REAL, body TEXT)")
    c.execute("CREATE INDEX m_i ON m (q, s, p DESC, id)")
    row = ("q", 0, 0, 1.0, BODY)
    t = time.perf_counter()
    for _ in range(n):
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO m (q, s, p, a, body) VALUES (?, ?, ?, ?, ?)", row)
        c.execute("COMMIT")
    one = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):  # autocommit: the statement is its own transaction
        c.execute("INSERT INTO m (q, s, p, a, body) VALUES (?, ?, ?, ?, ?)", row)
    auto = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(0, n, 1000):
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO m (q, s, p, a, body) VALUES (?, ?, ?, ?, ?)", [row] * 1000)
        c.execute("COMMIT")
    batch = n / (time.perf_counter() - t)
    return {"raw sqlite3 BEGIN/INSERT/COMMIT, 1 per transaction": one,
            "raw sqlite3 autocommit INSERT, 1 per transaction": auto, "raw sqlite3 executemany x1000": batch}


def part_broker(n: int) -> dict:
    from funboost_sqlite import SqliteBroker
    b = SqliteBroker("bench_broker")
    one, batch, fa = broker_rates(b, BODY, n, n, 50)
    b.close()
    return {"broker publish, 1 per call": one, "broker publish, batches of 1000": batch,
            "broker fetch(50)+ack, 1 thread": fa}


def part_mp_consumer(queue: str, file_lock: str) -> dict:
    from funboost_sqlite import SqliteBroker
    b = SqliteBroker(queue, SqliteBroker.parse_options({"file_lock": file_lock == "1"}))
    n = 0
    first = last = 0.0
    while True:
        d = b.fetch(50, 0.5)
        if not d:
            break
        first = first or time.time()
        b.ack(d)
        n += len(d)
        last = time.time()
    b.close()
    return {"n": n, "first": first, "last": last}


def part_mp(n: int) -> dict:
    """Two consumer processes fetch+ack the same queue while a third process publishes one by one."""
    from funboost.plugins.broker import OutgoingMessage
    from funboost_sqlite import SqliteBroker
    out = {}
    for file_lock in ("1", "0"):
        q = f"bench_mp_{file_lock}"
        b = SqliteBroker(q, SqliteBroker.parse_options({"file_lock": file_lock == "1"}))
        b.publish([OutgoingMessage(body=BODY, task_id="x") for _ in range(n)])
        procs = [subprocess.Popen([sys.executable, HERE, "--part", "mp_consumer", q, file_lock],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        # publish concurrently, one message per transaction, to make the writers contend
        while not b.queue_size().in_flight:  # wait until the consumers run
            time.sleep(0.001)
        pub_n = n // 4
        tp = time.perf_counter()
        for _ in range(pub_n):
            b.publish([OutgoingMessage(body=BODY, task_id="x")])
        pub_rate = pub_n / (time.perf_counter() - tp)
        res = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        counts = [r["n"] for r in res]
        # from the first message taken to the last ack, so process start-up is not counted
        dt = max(r["last"] for r in res) - min(r["first"] for r in res if r["first"])
        assert sum(counts) == n + pub_n, counts
        label = "flock" if file_lock == "1" else "busy_timeout only"
        out[f"2 consumer processes fetch+ack, {label}"] = sum(counts) / dt
        out[f"  concurrent publisher process, {label}"] = pub_rate
        b.close()
    return out


def part_e2e(n: int, threads: int) -> dict:
    from funboost import BoosterParams, boost
    counter = RunCounter(n)

    @boost(BoosterParams(queue_name="bench_e2e", broker_kind="SQLITE_QUEUE", concurrent_num=threads,
                         state_backend="memory", log_to_console=False))
    def noop(x):
        counter.hit()

    pub, con = push_then_consume(noop.push, noop.consume, counter, 600)
    return {"end to end: push 1 by 1": pub, f"end to end: consume ({threads} threads)": con}


def part_orig(n: int, threads: int) -> dict:
    """Runs under the original funboost 55.0 (its own venv). Its SQLITE_QUEUE is persistqueue's
    SQLiteAckQueue; the queue directory is pointed at a temp dir instead of its default /sqllite_queues."""
    from funboost.funboost_config_deafult import BrokerConnConfig
    BrokerConnConfig.SQLLITE_QUEUES_PATH = os.environ["FUNBOOST_SQLITE_DIR"]
    from funboost import BoosterParams, BrokerEnum, boost
    counter = RunCounter(n)

    @boost(BoosterParams(queue_name="bench_orig", broker_kind=BrokerEnum.SQLITE_QUEUE, concurrent_num=threads,
                         log_level=30))
    def noop(x):
        counter.hit()

    pub, con = push_then_consume(noop.push, noop.consume, counter, 1800)
    return {"orig 55.0 SQLITE_QUEUE: push 1 by 1": pub, f"orig 55.0 SQLITE_QUEUE: consume ({threads} threads)": con}


# ---------------------------------------------------------------- driver
def run_part(python: str, *args: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="funboost-sqlite-bench-") as d:
        env = dict(os.environ, FUNBOOST_SQLITE_DIR=os.path.join(d, "queues"),
                   FUNBOOST_DATA_DIR=os.path.join(d, "data"), PYTHONPATH=d)
        # cwd and sys.path[1] = the temp dir: the original funboost (nb_log) writes funboost_config.py and
        # nb_log_config.py into what it takes for the project root
        proc = subprocess.run([python, HERE, "--part", *args], cwd=d, env=env, capture_output=True, text=True,
                              timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 and not lines:
            raise RuntimeError(f"part {args} failed:\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--orig-n", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--no-orig", action="store_true")
    ap.add_argument("--part", nargs="+")
    a = ap.parse_args()
    if a.part:
        name, *rest = a.part
        res = {"raw": lambda: part_raw(int(rest[0])), "broker": lambda: part_broker(int(rest[0])),
               "mp": lambda: part_mp(int(rest[0])), "mp_consumer": lambda: part_mp_consumer(*rest),
               "e2e": lambda: part_e2e(int(rest[0]), int(rest[1])),
               "orig": lambda: part_orig(int(rest[0]), int(rest[1]))}[name]()
        # os.write: the original funboost (nb_log) replaces print() with a coloured, prefixed one
        os.write(1, ("\n" + json.dumps(res) + "\n").encode())
        os._exit(0)  # consumer threads of the e2e parts are not daemons
    results: dict[str, float] = {}
    print(f"sqlite broker benchmark, N={a.n}, {a.threads} threads, cpus={os.cpu_count()}", flush=True)
    for part in (("raw", str(a.n)), ("broker", str(a.n)), ("mp", str(a.n)), ("e2e", str(a.n), str(a.threads))):
        r = run_part(sys.executable, *part)
        results.update(r)
        for k, v in r.items():
            print(f"  {k:<55} {v:>10,.0f} msg/s", flush=True)
    if not a.no_orig and os.path.exists(ORIG_PYTHON):
        r = run_part(ORIG_PYTHON, "orig", str(a.orig_n), str(a.threads))
        results.update(r)
        for k, v in r.items():
            print(f"  {k:<55} {v:>10,.0f} msg/s  (N={a.orig_n})", flush=True)
        pub_x = results["end to end: push 1 by 1"] / results["orig 55.0 SQLITE_QUEUE: push 1 by 1"]
        con_key = f"end to end: consume ({a.threads} threads)"
        con_x = results[con_key] / results[f"orig 55.0 SQLITE_QUEUE: consume ({a.threads} threads)"]
        print(f"  ratio vs original: publish x{pub_x:.1f} (target >= 5), consume x{con_x:.1f} (target >= 20)")
    elif not a.no_orig:
        print(f"  original funboost 55.0 not found at {ORIG_PYTHON} (pip install funboost==55.0 in its own venv)")


if __name__ == "__main__":
    main()
