"""Benchmark of the sqlalchemy broker (funboost-sqlalchemy) beside the original funboost 55.0 `SQLACHEMY` kind,
on the same databases (MariaDB and PostgreSQL on loopback, database ``test``).

    python bench/sqlalchemy_bench.py [--n 10000] [--orig-n 2000] [--threads 50] [--orig-python PATH]

For each database, in fresh processes: push_many N no-op tasks, then consume them with
@boost(BoosterParams(broker_kind="SQLALCHEMY", concurrent_num=THREADS)) (from consume() to the last run).
The original runs the same no-op function with ``broker_kind=BrokerEnum.SQLACHEMY`` and its
``SQLACHEMY_ENGINE_URL`` pointed at the same database, in its own virtualenv (``--orig-python``, else
FUNBOOST_ORIG_PYTHON, else the first venv with funboost==55.0 that bench/_common.py knows); it publishes
one by one (it has no batch publish). Our tables get a unique prefix and the original's table a unique
queue name; both are dropped afterwards. ``part_ours`` and ``part_orig`` measure one side once and return
its figures (run_all.py calls them one at a time through ``bench/_call.py``). Read figures as +-30 % on a
small shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Optional

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))

from _common import (RunCounter, find_original_python, machine_info, push_then_consume,  # noqa: E402
                     report_and_exit, run_original, run_part)

DBS = {
    "MariaDB": "mysql+pymysql://root@127.0.0.1:3306/test",
    "PostgreSQL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
}
ORIG_URLS = {  # the original's own driver choice
    "MariaDB": "mysql+pymysql://root@127.0.0.1:3306/test",
    "PostgreSQL": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
}


def part_ours(db: str, n: int, threads: int = 50) -> dict[str, float]:
    """funboost-sqlalchemy on ``db`` (a key of DBS): push_many ``n`` no-op tasks, then consume them."""
    import sqlalchemy as sa
    from funboost import BoosterParams, boost
    from funboost_sqlalchemy.broker import make_tables

    prefix = f"fbbench_{uuid.uuid4().hex[:8]}_"
    opts = {"url": DBS[db], "table_prefix": prefix}
    counter = RunCounter(n)

    @boost(BoosterParams(queue_name="bench_sa", broker_kind="SQLALCHEMY", concurrent_num=threads,
                         broker_exclusive_config=opts, state_backend="memory", log_to_console=False))
    def noop(x):
        counter.hit()

    try:
        pub, con = push_then_consume(noop.push_many, noop.consume, counter, 900, one_by_one=False)
    finally:
        noop.stop_consume(10)  # no open transaction of the consumer's may hold the tables being dropped
        noop.close()
        engine = sa.create_engine(DBS[db])
        make_tables(prefix)[0].drop_all(engine)
        engine.dispose()
    return {f"{db}: ours push_many": pub, f"{db}: ours consume ({threads} threads)": con}


ORIG_SOURCE = r'''
import sys, uuid
db, url, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from funboost.funboost_config_deafult import BrokerConnConfig
BrokerConnConfig.SQLACHEMY_ENGINE_URL = url
from funboost import BoosterParams, BrokerEnum, boost
from _common import RunCounter, emit, finish_child, push_then_consume  # bench/ is on the path
queue = "fbbench_orig_" + uuid.uuid4().hex[:8]
counter = RunCounter(n)

@boost(BoosterParams(queue_name=queue, broker_kind=BrokerEnum.SQLACHEMY, concurrent_num=threads, log_level=30))
def noop(x):
    counter.hit()

try:
    pub, con = push_then_consume(noop.push, noop.consume, counter, 1800)
finally:
    import sqlalchemy as sa
    e = sa.create_engine(url)
    with e.begin() as c:
        c.execute(sa.text(f"DROP TABLE IF EXISTS {queue}"))
emit({f"{db}: original 55.0 SQLACHEMY push 1 by 1": pub,
      f"{db}: original 55.0 SQLACHEMY consume ({threads} threads)": con})
finish_child()
'''


def part_orig(db: str, n: int, threads: int = 50, python: Optional[str] = None) -> dict[str, float]:
    """The original 55.0's ``SQLACHEMY`` kind on ``db``, run by ``python`` (a venv with funboost==55.0 and
    sqlalchemy, sqlalchemy_utils, pymysql, psycopg2-binary; default: FUNBOOST_ORIG_PYTHON, else
    bench/.venvs/orig) in a process of its own. Its ``rss_mb`` is that process's peak RSS."""
    python = python or find_original_python()
    if not python:
        raise RuntimeError("no virtualenv with funboost==55.0: pass its python or set FUNBOOST_ORIG_PYTHON")
    res = run_original(ORIG_SOURCE, db, ORIG_URLS[db], n, threads, python=python)
    if res is None:
        raise RuntimeError(f"the original's part on {db} failed (its output is on stderr)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--orig-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--orig-python", default=None)
    a = ap.parse_args()
    if a.part:
        db, n, threads = a.part
        report_and_exit(part_ours, db, int(n), int(threads))
    print(f"# sqlalchemy_bench  n={a.n}  orig-n={a.orig_n}  threads={a.threads}  {machine_info()}", flush=True)
    orig = a.orig_python or find_original_python()
    for db in DBS:
        res = run_part(HERE, db, a.n, a.threads) or {}
        if orig:
            try:
                res.update(part_orig(db, a.orig_n, a.threads, orig))
            except RuntimeError as exc:
                print(f"  {db}: original not measured: {exc}", flush=True)
        for k, v in res.items():
            if k != "rss_mb":
                print(f"  {k:<58} {v:>10,.0f} msg/s", flush=True)
        ours = next((v for k, v in res.items() if "ours consume" in k), None)
        theirs = next((v for k, v in res.items() if "original 55.0 SQLACHEMY consume" in k), None)
        if ours and theirs:
            print(f"  {db}: ours / original consume = {ours / theirs:.1f}x (target >= 3x)", flush=True)


if __name__ == "__main__":
    main()
