"""Benchmark of the postgres broker (funboost-postgres) beside raw psycopg and PgQueuer.

    python bench/postgres_bench.py [--n 20000] [--threads 50] [--rounds 3] [--no-pgqueuer]

Needs a PostgreSQL server at FUNBOOST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test)
and, for the comparison, ``pip install pgqueuer asyncpg`` in the same environment. Every part runs in a
fresh process, in a schema of its own that it creates and drops itself (``part_*``, also called one at a
time by run_all.py through ``bench/_call.py``: each returns its figures). Prints msg/s:

  raw psycopg           multi-row INSERT ... SELECT FROM unnest(...) x1000 (one round trip per batch);
                        one thread claiming 100 rows with SKIP LOCKED then DELETE (the at-least-once
                        ceiling: two round trips per batch, no Python broker code)
  broker level          PostgresBroker.publish one by one and in batches of 1000; fetch(100)+ack, 1 thread
  end to end            @boost(BoosterParams(broker_kind="POSTGRES", concurrent_num=THREADS)) with a no-op
                        function: push_many N, then consume them (from the first run's start to the last
                        run's end: the consumer's start-up is not in the rate)
  PgQueuer              the same no-op job: batch enqueue (lists, x1000), then one QueueManager draining
                        the queue (asyncpg driver, batch_size 100 and its default 10), timed the same way

The consume comparison (funboost end to end against PgQueuer with batch_size 100) runs ``--rounds`` times,
the two alternating (which goes first alternates too), each in a fresh process; it prints every round,
the medians and the median of the per-round ratios, with the client process's CPU per consumed message
beside each rate (less sensitive to other load than the rate; PostgreSQL's own CPU is not in it).
Timings are noisy on a small shared machine: read single runs as +-30 %.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import uuid
from typing import Callable

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))

from _common import RunCounter, broker_rates, machine_info, report_and_exit, run_part, timed_drain  # noqa: E402

DSN = os.environ.get("FUNBOOST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BODY = '{"x": 1, "extra": {"task_id": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000", "publish_time": 1700000000.1234}}'


# ---------------------------------------------------------------- parts (each runs in a fresh process)
def in_own_schema(part: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
    """``part(*args)`` called with ``schema=`` a new, empty schema, dropped with all it holds afterwards: a
    part shares no table, queue or NOTIFY channel with any other run and needs nothing from the environment."""
    @functools.wraps(part)
    def run_in_own_schema(*args: int) -> dict[str, float]:
        import psycopg
        schema = f"fb_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(DSN, autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        try:
            return part(*args, schema=schema)
        finally:
            with psycopg.connect(DSN, autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return run_in_own_schema


@in_own_schema
def part_raw(n: int, *, schema: str) -> dict[str, float]:
    import psycopg
    c = psycopg.connect(DSN, autocommit=True)
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
    c.close()
    return {"raw psycopg: INSERT from unnest x1000": publish,
            "raw psycopg: SKIP LOCKED claim 100 + DELETE, 1 thread": consume}


@in_own_schema
def part_broker(n: int, *, schema: str) -> dict[str, float]:
    from funboost_postgres import PostgresBroker, PostgresOptions
    b = PostgresBroker("bench_broker", PostgresOptions(dsn=DSN, db_schema=schema))
    one, batch, fa = broker_rates(b, BODY, max(1000, n // 10), n, 100)
    b.close()
    return {"broker publish, 1 per call": one, "broker publish, batches of 1000": batch,
            "broker fetch(100)+ack, 1 thread": fa}


@in_own_schema
def part_e2e(n: int, threads: int = 50, *, schema: str) -> dict[str, float]:
    from funboost import BoosterParams, boost
    counter = RunCounter(n)

    @boost(BoosterParams(queue_name="bench_e2e", broker_kind="POSTGRES", concurrent_num=threads,
                         broker_exclusive_config={"dsn": DSN, "db_schema": schema},
                         state_backend="memory", log_to_console=False))
    def noop(x):
        counter.hit()

    t = time.perf_counter()
    noop.push_many(range(n))
    pub = n / (time.perf_counter() - t)
    # from the first run's start: the consumer's start-up excluded from the rate (not from the CPU)
    con, cpu = timed_drain(noop.consume, counter)
    cpu_us = cpu * 1e6
    noop.stop_consume(10)  # its connections hold no lock on the tables when the schema is dropped
    noop.close()
    return {"end to end: push_many (batches of 1000)": pub, f"end to end: consume ({threads} threads)": con,
            "cpu_us: end to end consume": cpu_us}


@in_own_schema
def part_pgqueuer(n: int, batch_size: int = 100, *, schema: str) -> dict[str, float]:
    import asyncio

    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def main() -> dict:
        # PgQueuer puts its tables where the connection's search_path points (no PGQUEUER_SCHEMA needed)
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        q = Queries.from_asyncpg_connection(conn)
        await q.install()
        t = time.perf_counter()
        for _ in range(0, n, 1000):
            await q.enqueue(["noop"] * 1000, [BODY.encode()] * 1000, [0] * 1000)
        pub = n / (time.perf_counter() - t)
        qm = QueueManager(q)
        done = [0]
        first = [0.0, 0.0]  # first job's start, last job's end

        @qm.entrypoint("noop")
        async def noop(job) -> None:
            if done[0] == 0:
                first[0] = time.perf_counter()
            done[0] += 1
            first[1] = time.perf_counter()

        c = time.process_time()
        await qm.run(mode=QueueExecutionMode.drain, batch_size=batch_size)
        con = (done[0] - 1) / (first[1] - first[0])  # timed as the funboost part is
        cpu_us = (time.process_time() - c) / n * 1e6
        assert done[0] == n, done[0]
        await conn.close()
        return {"PgQueuer: batch enqueue x1000": pub, f"PgQueuer: consume (batch_size {batch_size})": con,
                f"cpu_us: PgQueuer consume (batch_size {batch_size})": cpu_us}

    return asyncio.run(main())


# ---------------------------------------------------------------- driver
def run(name: str, *args: int) -> dict:
    """``part_<name>(*args)`` in a fresh process; {} when it failed (the reason is on stderr)."""
    return run_part(HERE, name, *args) or {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-pgqueuer", action="store_true")
    a = ap.parse_args()
    if a.part:
        name, *args = a.part
        report_and_exit(globals()[f"part_{name}"], *[int(x) for x in args])
    print(f"# postgres_bench  n={a.n}  threads={a.threads}  {machine_info()}", flush=True)
    results: dict = {}
    results.update(run("raw", a.n))
    results.update(run("broker", a.n))
    if not a.no_pgqueuer:
        results.update(run("pgqueuer", a.n, 10))
    # the consume comparison: alternating rounds, medians
    e2e_key = f"end to end: consume ({a.threads} threads)"
    pgq_key = "PgQueuer: consume (batch_size 100)"
    rounds: list[dict] = []
    for r in range(max(1, a.rounds)):
        parts = [("e2e", a.n, a.threads)] + ([] if a.no_pgqueuer else [("pgqueuer", a.n, 100)])
        if r % 2:
            parts.reverse()
        got: dict = {}
        for args in parts:
            got.update(run(*args))
        rounds.append(got)
        line = (f"  round {r + 1}: funboost {got.get(e2e_key, 0):,.0f}/s "
                f"({got.get('cpu_us: end to end consume', 0):.0f} µs CPU/msg)")
        if not a.no_pgqueuer:
            line += (f", PgQueuer {got.get(pgq_key, 0):,.0f}/s "
                     f"({got.get('cpu_us: PgQueuer consume (batch_size 100)', 0):.0f} µs CPU/msg)")
        print(line, flush=True)
    for key in (e2e_key, "end to end: push_many (batches of 1000)", "cpu_us: end to end consume", pgq_key,
                "cpu_us: PgQueuer consume (batch_size 100)", "PgQueuer: batch enqueue x1000"):
        values = [g[key] for g in rounds if key in g]
        if values:
            results[key + f" (median of {len(values)})"] = statistics.median(values)
    for k, v in results.items():
        if k == "rss_mb":
            continue
        unit = "µs/msg" if k.startswith("cpu_us") else "msg/s"
        print(f"  {k:<64} {v:>10,.0f} {unit}", flush=True)
    ratios = [g[e2e_key] / g[pgq_key] for g in rounds if g.get(e2e_key) and g.get(pgq_key)]
    if ratios:
        print(f"  end-to-end consume / PgQueuer (batch_size 100) consume, per round: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}x (target >= 1.5x)")
    e2e = statistics.median([g[e2e_key] for g in rounds if g.get(e2e_key)] or [0])
    pub = results.get("broker publish, batches of 1000")
    if pub:
        print(f"  batch publish {pub:,.0f}/s (target >= 30,000); consume {e2e:,.0f}/s (target >= 5,000)")


if __name__ == "__main__":
    main()
