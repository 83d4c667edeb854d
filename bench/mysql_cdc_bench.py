"""MYSQL_CDC benchmark: rows per second through funboost against a raw BinLogStreamReader loop, on the
same binlog (N rows inserted once, both read from the position before the inserts).

    bash scripts/mariadb_cdc_service.sh                       # MariaDB with ROW binlog on 127.0.0.1:3307
    .venv/bin/python bench/mysql_cdc_bench.py [--n 100000] [--threads 8]

raw: ``BinLogStreamReader`` (non-blocking, only WriteRowsEvent of the bench schema) and a loop that reads
every row's values. funboost: ``@boost(broker_kind="MYSQL_CDC", start="position")`` with a function that
counts, timed from ``consume()`` to the last row's call; every row becomes a JSON message, goes through
the engine's controls and is acked, and the checkpoint is written to the (sqlite) state backend per ack
batch. funboost runs twice: with the default ``reader="process"`` (the binlog decoded in a child process)
and with ``reader="thread"`` (decoded in a thread of the consumer's process, under the engine's GIL). Each
part runs in its own child process and scratch directory. Target: funboost (default) >= 0.7x raw.
Env: FUNBOOST_MARIADB_CDC_PORT (3307). 2-core machine shared with other work: +-30 %.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, finish_child, machine_info, run_part  # noqa: E402

HERE = os.path.abspath(__file__)
CONN = {"host": "127.0.0.1", "port": int(os.environ.get("FUNBOOST_MARIADB_CDC_PORT", "3307")),
        "user": "root", "password": ""}


def _connect(autocommit: bool = True):
    import pymysql
    return pymysql.connect(**CONN, autocommit=autocommit)


def prepare(n: int) -> tuple[str, str, int]:
    """A fresh schema with N inserted rows; returns (schema, binlog file, position before the inserts)."""
    schema = f"cdc_bench_{uuid.uuid4().hex[:8]}"
    with _connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {schema}")
        cur.execute(f"CREATE TABLE {schema}.items (id INT PRIMARY KEY, name VARCHAR(50), amount DECIMAL(10,2), "
                    f"created DATETIME)")
        cur.execute("SHOW MASTER STATUS")
        log_file, log_pos = cur.fetchone()[:2]
    with _connect(autocommit=False) as c, c.cursor() as cur:
        for start in range(0, n, 1000):
            cur.executemany(f"INSERT INTO {schema}.items VALUES (%s, %s, %s, NOW())",
                            [(i, f"name {i}", i / 100) for i in range(start, min(n, start + 1000))])
            c.commit()
    return schema, log_file, int(log_pos)


def part_raw(n: int, schema: str, log_file: str, log_pos: int) -> dict:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import WriteRowsEvent
    settings = {"host": CONN["host"], "port": CONN["port"], "user": CONN["user"], "passwd": CONN["password"]}
    t0 = time.perf_counter()
    stream = BinLogStreamReader(connection_settings=settings, server_id=990_001, resume_stream=True,
                                log_file=log_file, log_pos=log_pos, blocking=False,
                                only_events=[WriteRowsEvent], only_schemas=[schema], enable_logging=False)
    count = 0
    for ev in stream:
        for row in ev.rows:
            if row["values"]["id"] is not None:
                count += 1
        if count >= n:
            break
    dt = time.perf_counter() - t0
    stream.close()
    assert count == n, count
    return {"raw BinLogStreamReader loop": n / dt}


def part_funboost(n: int, schema: str, log_file: str, log_pos: int, threads: int, in_thread: int = 0) -> dict:
    from funboost import BoosterParams, boost
    # the checkpoint lives in the state backend: make sure the scratch directory's state file can exist
    # (core's sqlite state backend does not create the parent of an explicit FUNBOOST_STATE_SQLITE_PATH)
    state_path = os.environ.get("FUNBOOST_STATE_SQLITE_PATH")
    if state_path:
        os.makedirs(os.path.dirname(state_path), exist_ok=True)
    done = threading.Event()
    lock = threading.Lock()
    seen = [0]

    @boost(BoosterParams(queue_name=f"cdc_bench_{uuid.uuid4().hex[:8]}", broker_kind="MYSQL_CDC",
                         concurrent_num=threads, log_to_console=False,
                         broker_exclusive_config={**CONN, "schemas": [schema], "start": "position",
                                                  "start_log_file": log_file, "start_log_pos": log_pos,
                                                  "reader": "thread" if in_thread else "process"}))
    def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None):
        with lock:
            seen[0] += 1
            if seen[0] >= n:
                done.set()

    t0 = time.perf_counter()
    on_row.consume()
    if not done.wait(1800):
        raise RuntimeError(f"only {seen[0]} of {n} rows")
    dt = time.perf_counter() - t0
    reader = "reader in a thread" if in_thread else "reader process (default)"
    return {f"funboost MYSQL_CDC, {threads} threads, {reader}": n / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    if a.part:
        name, n, schema, log_file, log_pos, *rest = a.part
        fn = globals()[f"part_{name}"]
        emit(fn(int(n), schema, log_file, int(log_pos), *[int(x) for x in rest]))
        finish_child()
    print(f"# mysql_cdc_bench  n={a.n}  threads={a.threads}  {machine_info()}", flush=True)
    schema, log_file, log_pos = prepare(a.n)
    try:
        results: dict = {}
        for args in (("raw",), ("funboost", a.threads, 0), ("funboost", a.threads, 1)):
            res = run_part(HERE, args[0], a.n, schema, log_file, log_pos, *args[1:]) or {}
            res.pop("rss_mb", None)
            results.update(res)
        for k, v in results.items():
            print(f"  {k:<62} {v:>10,.0f} rows/s", flush=True)
        raw = results.get("raw BinLogStreamReader loop")
        for k, v in results.items():
            if raw and k.startswith("funboost"):
                print(f"  {k[len('funboost MYSQL_CDC, '):]} / raw: {v / raw:.2f}x (target for the default >= 0.7x)")
    finally:
        with _connect() as c, c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {schema}")


if __name__ == "__main__":
    main()
