"""Benchmark of the postgres broker (funboost-postgres) beside raw psycopg and PgQueuer.

    python bench/postgres_bench.py [--n 20000] [--threads 50] [--no-pgqueuer]

Needs a PostgreSQL server at FUNBOOST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test)
and, for the comparison, ``pip install pgqueuer asyncpg`` in the same environment. Every part runs in a
fresh process, in a schema of its own (dropped afterwards). Prints msg/s:

  raw psycopg           multi-row INSERT ... SELECT FROM unnest(...) x1000 (one round trip per batch);
                        one thread claiming 100 rows with SKIP LOCKED then DELETE (the at-least-once
                        ceiling: two round trips per batch, no Python broker code)
  broker level          PostgresBroker.publish one by one and in batches of 1000; fetch(100)+ack, 1 thread
  end to end            @boost(BoosterParams(broker_kind="POSTGRES", concurrent_num=THREADS)) with a no-op
                        function: push_many N, then consume them (from consume() to the last run)
  PgQueuer              the same no-op job: batch enqueue (lists, x1000), then one QueueManager draining
                        the queue (asyncpg driver, batch_size 100 and its default 10)

Timings are noisy on a small shared machine: read them as +-30 %.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))

from _common import emit, finish_child, machine_info, parse_result  # noqa: E402

DSN = os.environ.get("FUNBOOST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BODY = '{"x": 1, "extra": {"task_id": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000", "publish_time": 1700000000.1234}}'


# ---------------------------------------------------------------- parts (each runs in a subprocess)
def part_raw(n: int) -> dict:
    import psycopg
    schema = os.environ["FUNBOOST_POSTGRES_SCHEMA"]
    c = psycopg.connect(DSN, autocommit=True)
    c.execute(f'CREATE SCHEMA "{schema}"')
    c.execute(f'CREATE TABLE "{schema}".m (id bigserial PRIMARY KEY, queue text NOT NULL, priority int NOT NULL '
              f'DEFAULT 0, available_at timestamptz NOT NULL DEFAULT now(), consumer text, body text NOT NULL)')
    c.execute(f'CREATE INDEX ON "{schema}".m (queue, priority DESC, id) WHERE consumer IS NULL')
    ins = (f'INSERT INTO "{schema}".m (queue, body) SELECT %s, b FROM unnest(%s::text[]) AS u(b)')
    t = time.perf_counter()
    for _ in range(0, n, 1000):
        c.execute(ins, ("q", [BODY] * 1000))
    publish = n / (time.perf_counter() - t)
    claim = (f'WITH p AS (SELECT id FROM "{schema}".m WHERE queue = %s AND consumer IS NULL '
             f'ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED) '
             f'UPDATE "{schema}".m AS m SET consumer = %s FROM p WHERE m.id = p.id RETURNING m.id, m.body')
    delete = f'DELETE FROM "{schema}".m WHERE id = ANY(%s)'
    t = time.perf_counter()
    got = 0
    while got < n:
        rows = c.execute(claim, ("q", 100, "me")).fetchall()
        c.execute(delete, ([r[0] for r in rows],))
        got += len(rows)
    consume = n / (time.perf_counter() - t)
    return {"raw psycopg: INSERT from unnest x1000": publish,
            "raw psycopg: SKIP LOCKED claim 100 + DELETE, 1 thread": consume}


def part_broker(n: int) -> dict:
    from funboost.plugins.broker import OutgoingMessage
    from funboost_postgres import PostgresBroker
    b = PostgresBroker("bench_broker")
    m = [OutgoingMessage(body=BODY, task_id="x")]
    one_n = max(1000, n // 10)
    t = time.perf_counter()
    for _ in range(one_n):
        b.publish(m)
    one = one_n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(0, n, 1000):
        b.publish([OutgoingMessage(body=BODY, task_id="x") for _ in range(1000)])
    batch = n / (time.perf_counter() - t)
    total = n + one_n
    t = time.perf_counter()
    got = 0
    while got < total:
        d = b.fetch(100, 1.0)
        b.ack(d)
        got += len(d)
    fa = total / (time.perf_counter() - t)
    b.close()
    return {"broker publish, 1 per call": one, "broker publish, batches of 1000": batch,
            "broker fetch(100)+ack, 1 thread": fa}


def part_e2e(n: int, threads: int) -> dict:
    import threading
    from funboost import BoosterParams, boost
    done = [0]
    finished = threading.Event()
    lock = threading.Lock()

    @boost(BoosterParams(queue_name="bench_e2e", broker_kind="POSTGRES", concurrent_num=threads,
                         state_backend="memory", log_to_console=False))
    def noop(x):
        with lock:
            done[0] += 1
            if done[0] >= n:
                finished.set()

    t = time.perf_counter()
    noop.push_many(range(n))
    pub = n / (time.perf_counter() - t)
    t = time.perf_counter()
    noop.consume()
    finished.wait(600)
    con = n / (time.perf_counter() - t)
    return {"end to end: push_many (batches of 1000)": pub, f"end to end: consume ({threads} threads)": con}


def part_pgqueuer(n: int, batch_size: int) -> dict:
    import asyncio

    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def main() -> dict:
        conn = await asyncpg.connect(DSN)
        q = Queries.from_asyncpg_connection(conn)
        await q.install()
        t = time.perf_counter()
        for _ in range(0, n, 1000):
            await q.enqueue(["noop"] * 1000, [BODY.encode()] * 1000, [0] * 1000)
        pub = n / (time.perf_counter() - t)
        qm = QueueManager(q)
        done = [0]

        @qm.entrypoint("noop")
        async def noop(job) -> None:
            done[0] += 1

        t = time.perf_counter()
        await qm.run(mode=QueueExecutionMode.drain, batch_size=batch_size)
        con = done[0] / (time.perf_counter() - t)
        assert done[0] == n, done[0]
        await conn.close()
        return {"PgQueuer: batch enqueue x1000": pub, f"PgQueuer: consume (batch_size {batch_size})": con}

    return asyncio.run(main())


# ---------------------------------------------------------------- driver
def run_part(*args: str) -> dict:
    import psycopg
    schema = f"fb_bench_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, FUNBOOST_POSTGRES_DSN=DSN, FUNBOOST_POSTGRES_SCHEMA=schema, PGQUEUER_SCHEMA=schema,
               FUNBOOST_LOG_TO_CONSOLE="0")
    with psycopg.connect(DSN, autocommit=True) as c:
        if args[0] == "pgqueuer":
            c.execute(f'CREATE SCHEMA "{schema}"')
    try:
        p = subprocess.run([sys.executable, HERE, "--part", *args], env=env, capture_output=True, text=True,
                           timeout=1800)
        res = parse_result(p.stdout)
        if res is None:
            sys.stderr.write(f"part {args} failed (rc={p.returncode}):\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}\n")
            return {}
        return res
    finally:
        with psycopg.connect(DSN, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--no-pgqueuer", action="store_true")
    a = ap.parse_args()
    if a.part:
        name, *args = a.part
        fn = globals()[f"part_{name}"]
        emit(fn(*[int(x) for x in args]))
        finish_child()
    print(f"# postgres_bench  n={a.n}  threads={a.threads}  {machine_info()}", flush=True)
    results: dict = {}
    for args in (("raw", a.n), ("broker", a.n), ("e2e", a.n, a.threads)):
        results.update(run_part(*map(str, args)))
    if not a.no_pgqueuer:
        for bs in (100, 10):
            results.update(run_part("pgqueuer", str(a.n), str(bs)))
    for k, v in results.items():
        if k != "rss_mb":
            print(f"  {k:<58} {v:>10,.0f} msg/s", flush=True)
    e2e = next((v for k, v in results.items() if k.startswith("end to end: consume")), None)
    pgq = max((v for k, v in results.items() if k.startswith("PgQueuer: consume")), default=None)
    if e2e and pgq:
        print(f"  end-to-end consume / best PgQueuer consume: {e2e / pgq:.2f}x (target >= 1.5x)")
    pub = results.get("broker publish, batches of 1000")
    if pub:
        print(f"  batch publish {pub:,.0f}/s (target >= 30,000); consume {e2e or 0:,.0f}/s (target >= 5,000)")


if __name__ == "__main__":
    main()
