"""Through the engine: SIGKILL of the consumer mid-stream, and a restart of the database mid-stream."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import CONN, PORT, connect, wait_for
from funboost.state.base import get_state_backend

WORKER = os.path.join(os.path.dirname(__file__), "_cdc_worker.py")
SERVICE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "mariadb_cdc_service.sh")


def seen(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def start_worker(queue: str, out: str, schema: str, sleep: float = 0.01) -> subprocess.Popen:
    opts = {**CONN, "schemas": [schema], "tables": ["items"], "reconnect_backoff_max": 1.0}
    return subprocess.Popen([sys.executable, WORKER, queue, out, str(sleep), json.dumps(opts)],
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_checkpoint(queue: str) -> None:
    """The consumer fixed its start position ("now") in the state backend."""
    wait_for(lambda: get_state_backend().get_flags(f"mysql_cdc:{queue}").get("checkpoint"), 60,
             "the consumer's first checkpoint")


def insert(schema: str, ids: range, per_txn: int = 100) -> None:
    with connect(autocommit=False) as c, c.cursor() as cur:
        for start in range(ids.start, ids.stop, per_txn):
            cur.executemany(f"INSERT INTO {schema}.items (id) VALUES (%s)",
                            [(i,) for i in range(start, min(start + per_txn, ids.stop))])
            c.commit()


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait(10)


def test_sigkill_after_300_of_3000_then_restart(queue_name, schema, tmp_path):
    out = str(tmp_path / "seen.log")
    insert(schema, range(-50, 0))  # before the start position: never delivered
    p = start_worker(queue_name, out, schema)
    try:
        wait_checkpoint(queue_name)
        insert(schema, range(0, 3000))
        wait_for(lambda: len(seen(out)) >= 300, 90, "300 rows processed")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        at_kill = len(seen(out))
        assert at_kill < 3000, "the kill must land mid-stream"
        p = start_worker(queue_name, out, schema)
        wait_for(lambda: set(range(3000)) <= set(seen(out)), 120, "every row after the restart")
        ids = seen(out)
        assert min(ids) >= 0, "rows from before the start position were delivered"
        duplicates = len(ids) - len(set(ids))
        # only rows in flight at the kill run twice: buffered/running/unacked, bounded by the buffer
        assert duplicates <= 2000 + 8, duplicates
    finally:
        stop(p)


def test_database_restart_mid_stream(queue_name, schema, tmp_path):
    out = str(tmp_path / "seen.log")
    p = start_worker(queue_name, out, schema, sleep=0.005)
    try:
        wait_checkpoint(queue_name)
        insert(schema, range(0, 1000))
        wait_for(lambda: len(seen(out)) >= 100, 90, "rows flowing")
        env = dict(os.environ, FUNBOOST_MARIADB_CDC_PORT=str(PORT))
        subprocess.run(["bash", SERVICE, "stop"], check=True, env=env)
        subprocess.run(["bash", SERVICE], check=True, env=env)
        with connect() as c, c.cursor() as cur:
            cur.execute("SELECT @@pid_file, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                        "WHERE VARIABLE_NAME = 'UPTIME'")
            assert int(cur.fetchone()[1]) < 60, "the server really restarted"
        insert(schema, range(1000, 2000))
        wait_for(lambda: set(range(2000)) <= set(seen(out)), 120, "every row across the restart")
        assert p.poll() is None, "the consumer survived the database restart"
    finally:
        stop(p)
