"""Consumer SIGKILL on the MySQL/MariaDB CDC kind (issue 19, item 1). A binlog has one reader per queue, so
the scenario is not "two consumers, one killed" but "the reader killed mid-stream, a new one started": rows
are inserted into a table of the project's own MariaDB with ROW binlog (scripts/mariadb_cdc_service.sh,
port 3307); once the first consumer has run N/10 rows it gets SIGKILL; a second consumer takes the reader
lock once it expires and resumes from the checkpoint. No row may be lost; a row may run twice only if the
killed consumer ran it (it ran but its checkpoint had not been written yet)."""
from __future__ import annotations

import os
import time
import uuid

import pytest

from funboost.testing import require_service, wait_until
from funboost.testing.workers import ConsumerProcess, stop_all

from .report import record
from .sizes import SIZE

PORT = int(os.environ.get("FUNBOOST_MARIADB_CDC_PORT", "3307"))
CONN = {"host": "127.0.0.1", "port": PORT, "user": "root", "password": ""}


@pytest.fixture
def schema():
    pytest.importorskip("funboost_mysql_cdc")
    import pymysql
    from funboost_mysql_cdc.broker import MysqlCdcBroker
    from funboost_mysql_cdc.options import MysqlCdcOptions

    reason = MysqlCdcBroker.check_available(MysqlCdcOptions(**CONN))
    if reason:
        require_service(f"mysql_cdc: {reason}; run scripts/mariadb_cdc_service.sh")
    name = f"rel_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(**CONN, autocommit=True) as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.items (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    yield name
    with pymysql.connect(**CONN, autocommit=True) as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")


def insert(schema: str, ids: range, per_txn: int = 100) -> None:
    import pymysql

    with pymysql.connect(**CONN, autocommit=False) as c, c.cursor() as cur:
        for start in range(ids.start, ids.stop, per_txn):
            cur.executemany(f"INSERT INTO {schema}.items (id, v) VALUES (%s, 0)",
                            [(i,) for i in range(start, min(start + per_txn, ids.stop))])
            c.commit()


def test_cdc_reader_sigkill_then_restart_loses_nothing(schema, qname, tmp_path):
    from funboost.state.base import get_state_backend

    n = SIZE.sigkill_tasks
    # a short reader lock: the restarted consumer takes over 5 s after the kill instead of 30
    options = {**CONN, "schemas": [schema], "tables": ["items"], "reconnect_backoff_max": 1.0,
               "reader_lock_ttl": 5.0}

    def consumer(name: str) -> ConsumerProcess:
        # the checkpoint lives in the state backend: the configured (durable) one, not "memory"
        return ConsumerProcess("mysql_cdc", qname, options, str(tmp_path / name), concurrency=8,
                               task_seconds=0.01, record="values.id", state_backend=None)

    victim = successor = None
    try:
        victim = consumer("victim.out")
        wait_until(lambda: get_state_backend().get_flags(f"mysql_cdc:{qname}").get("checkpoint"), 60, 0.1,
                   "the first consumer's start position")
        insert(schema, range(n))
        wait_until(lambda: victim.done() >= n // 10, 120, 0.05, f"{n // 10} rows run")
        victim.sigkill()
        killed_at = time.monotonic()
        victim_runs = victim.runs()
        assert len(victim_runs) < n, "every row ran before the kill: the test proved nothing"
        successor = consumer("successor.out")
        wait_until(lambda: set(victim_runs) | set(successor.runs()) >= set(range(n)), 180, 0.1,
                   f"all {n} rows run after the restart")
        drained_after = time.monotonic() - killed_at
        successor_runs = successor.runs()
    finally:
        stop_all([victim, successor])
    lost = set(range(n)) - set(victim_runs) - set(successor_runs)
    twice = {i for i in range(n) if victim_runs[i] + successor_runs[i] > 1}
    print(f"\nmysql_cdc: N={n}, {len(victim_runs)} run before the kill, lost {len(lost)}, duplicates {len(twice)}, "
          f"every row done {drained_after:.1f}s after the kill (reader lock ttl 5 s)")
    assert not lost, f"lost {len(lost)} rows: {sorted(lost)[:20]}"
    assert all(c == 1 for c in successor_runs.values()), "the restarted consumer ran a row twice"
    assert all(victim_runs[i] for i in twice), "a duplicate the killed consumer never ran"
    record("consumer_sigkill", kind="mysql_cdc", n=n, lost=len(lost), duplicates=len(twice),
           drain_seconds=round(drained_after, 1))
