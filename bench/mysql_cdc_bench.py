"""MYSQL_CDC benchmark: rows per second through funboost against a raw BinLogStreamReader loop, each on a
binlog of N freshly inserted rows.

    bash scripts/mariadb_cdc_service.sh                       # MariaDB with ROW binlog on 127.0.0.1:3307
    .venv/bin/python bench/mysql_cdc_bench.py [--n 100000] [--threads 8]

Every side prepares its own workload (:func:`prepare`: a fresh schema, the same table and the same N rows,
inserted in transactions of 1000) and is timed on reading it only, from the binlog position before its
inserts; the schema is dropped afterwards. raw: ``BinLogStreamReader`` (non-blocking, only WriteRowsEvent
of the bench schema) and a loop that reads every row's values. funboost: ``@boost(broker_kind="MYSQL_CDC",
start="position")`` with a function that counts, timed from ``consume()`` to the last row's call; every row
becomes a JSON message, goes through the engine's controls and is acked, and the checkpoint is written to
the (sqlite) state backend per ack batch. funboost runs twice: with the default ``reader="process"`` (the
binlog decoded in a child process) and with ``reader="thread"`` (decoded in a thread of the consumer's
process, under the engine's GIL). Target: funboost (default) >= 0.7x raw.

``run_raw(n)`` and ``run_funboost(n, threads, in_thread)`` measure one side once in the calling process and
return ``{"rows": rows/s}``; ``main()`` runs each in a fresh process and scratch directory, ``run_all.py``
calls them through ``bench/_call.py``.
Env: FUNBOOST_MARIADB_CDC_PORT (3307). 2-core machine shared with other work: +-30 %.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, Iterator, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, finish_child, machine_info, run_part  # noqa: E402

HERE = os.path.abspath(__file__)
CONN = {"host": "127.0.0.1", "port": int(os.environ.get("FUNBOOST_MARIADB_CDC_PORT", "3307")),
        "user": "root", "password": ""}


class Workload(NamedTuple):
    """N inserted rows: their schema and the binlog position before the inserts."""
    n: int
    schema: str
    log_file: str
    log_pos: int


def _connect(autocommit: bool = True):
    import pymysql
    return pymysql.connect(**CONN, autocommit=autocommit)


def prepare(n: int) -> Workload:
    """A fresh schema with N inserted rows."""
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
    return Workload(n, schema, log_file, int(log_pos))


def _on_fresh_rows(n: int, read: Callable[[Workload], float]) -> dict[str, float]:
    """``{"rows": read(workload)}`` on N rows of its own, whose schema is dropped afterwards."""
    w = prepare(n)
    try:
        return {"rows": read(w)}
    finally:
        with _connect() as c, c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {w.schema}")


def read_raw(w: Workload) -> float:
    """Rows/s of a raw BinLogStreamReader loop over the workload."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import WriteRowsEvent
    settings = {"host": CONN["host"], "port": CONN["port"], "user": CONN["user"], "passwd": CONN["password"]}
    t0 = time.perf_counter()
    stream = BinLogStreamReader(connection_settings=settings, server_id=990_001, resume_stream=True,
                                log_file=w.log_file, log_pos=w.log_pos, blocking=False,
                                only_events=[WriteRowsEvent], only_schemas=[w.schema], enable_logging=False)
    count = 0
    for ev in stream:
        for row in ev.rows:
            if row["values"]["id"] is not None:
                count += 1
        if count >= w.n:
            break
    dt = time.perf_counter() - t0
    stream.close()
    assert count == w.n, count
    return w.n / dt


@contextlib.contextmanager
def _state_files() -> Iterator[None]:
    """Somewhere for the checkpoint (the sqlite state backend, as a user has it): the caller's
    FUNBOOST_STATE_SQLITE_PATH or FUNBOOST_DATA_DIR (run_all's scratch dir), else a temporary data directory
    removed afterwards, so that a bench run leaves nothing in the user's data directory."""
    state_path = os.environ.get("FUNBOOST_STATE_SQLITE_PATH")
    if state_path:  # core's sqlite state backend does not create the parent of an explicit path
        os.makedirs(os.path.dirname(state_path), exist_ok=True)
    if state_path or os.environ.get("FUNBOOST_DATA_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="cdc-bench-data-") as d:
        os.environ["FUNBOOST_DATA_DIR"] = d
        try:
            yield
        finally:
            del os.environ["FUNBOOST_DATA_DIR"]


def read_funboost(w: Workload, threads: int, in_thread: int) -> float:
    """Rows/s through ``@boost(broker_kind="MYSQL_CDC")`` over the workload, from ``consume()`` to the
    last row's call."""
    from funboost import BoosterParams, boost
    done = threading.Event()
    lock = threading.Lock()
    seen = [0]

    def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None):
        with lock:
            seen[0] += 1
            if seen[0] >= w.n:
                done.set()

    with _state_files():
        options = {**CONN, "schemas": [w.schema], "start": "position", "start_log_file": w.log_file,
                   "start_log_pos": w.log_pos, "reader": "thread" if in_thread else "process"}
        booster = boost(BoosterParams(queue_name=f"cdc_bench_{uuid.uuid4().hex[:8]}", broker_kind="MYSQL_CDC",
                                      concurrent_num=threads, log_to_console=False,
                                      broker_exclusive_config=options))(on_row)
        try:
            t0 = time.perf_counter()
            booster.consume()
            if not done.wait(1800):
                raise RuntimeError(f"only {seen[0]} of {w.n} rows")
            return w.n / (time.perf_counter() - t0)
        finally:
            booster.stop_consume(10)  # stops the reader (process) and closes the checkpoint's store


def run_raw(n: int) -> dict[str, float]:
    """The raw side, once: ``{"rows": rows/s}`` on N rows of its own."""
    return _on_fresh_rows(n, read_raw)


def run_funboost(n: int, threads: int = 8, in_thread: int = 0) -> dict[str, float]:
    """The funboost side, once (``in_thread``: 1 = ``reader="thread"``, 0 = the default reader process):
    ``{"rows": rows/s}`` on N rows of its own."""
    return _on_fresh_rows(n, lambda w: read_funboost(w, threads, in_thread))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)  # a run_* function and its int args
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    if a.part:
        name, *args = a.part
        emit(globals()[f"run_{name}"](*map(int, args)))
        finish_child()
    print(f"# mysql_cdc_bench  n={a.n}  threads={a.threads}  {machine_info()}", flush=True)
    sides = {"raw BinLogStreamReader loop": ("raw", a.n),
             f"funboost MYSQL_CDC, {a.threads} threads, reader process (default)": ("funboost", a.n, a.threads, 0),
             f"funboost MYSQL_CDC, {a.threads} threads, reader in a thread": ("funboost", a.n, a.threads, 1)}
    results = {label: (run_part(HERE, *args) or {}).get("rows") for label, args in sides.items()}
    for label, v in results.items():
        print(f"  {label:<62} {v or 0:>10,.0f} rows/s", flush=True)
    raw = results["raw BinLogStreamReader loop"]
    for label, v in results.items():
        if raw and v and label.startswith("funboost"):
            print(f"  {label[len('funboost MYSQL_CDC, '):]} / raw: {v / raw:.2f}x (target for the default >= 0.7x)")


if __name__ == "__main__":
    main()
