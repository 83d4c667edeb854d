"""The binlog reader in a child process (reader="process", the default) and in a thread (reader="thread")."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import connect, drain, wait_for
from test_crash_restart import insert, seen, start_worker, stop, wait_checkpoint


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def is_reader(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"funboost_mysql_cdc.reader_process" in f.read()
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("reader", ["process", "thread"])
def test_both_readers_deliver_every_row_in_order(brokers, queue_name, schema, reader):
    b = brokers(queue_name, schemas=[schema], reader=reader)
    assert b.fetch(10, 0.2) == []
    insert(schema, range(0, 500), per_txn=50)
    got = drain(b, 500)
    assert [m["values"]["id"] for m in got] == list(range(500))
    assert (b._child is not None) == (reader == "process")


def test_reader_process_killed_is_replaced_without_loss(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema], reconnect_backoff_initial=0.05)
    assert b.fetch(10, 0.2) == []
    insert(schema, range(0, 300), per_txn=30)
    got = drain(b, 100)
    first = b._child
    assert first is not None
    first.kill()  # the reader process dies mid-stream: a new one streams on from this process's last row
    insert(schema, range(300, 600), per_txn=30)
    got += drain(b, 500)
    ids = [m["values"]["id"] for m in got]
    assert sorted(set(ids)) == list(range(600)), "a row was lost when the reader process died"
    assert len(ids) == len(set(ids)), "rows this process already had were handed out again"
    wait_for(lambda: b._child is not None and b._child is not first, 10, "a new reader process")


def test_consumer_sigkill_takes_its_reader_process_along(queue_name, schema, tmp_path):
    out = str(tmp_path / "seen.log")
    p = start_worker(queue_name, out, schema)
    try:
        wait_checkpoint(queue_name)
        insert(schema, range(0, 50))
        wait_for(lambda: len(seen(out)) >= 50, 60, "rows flowing")
        readers = [c for c in children_of(p.pid) if is_reader(c)]
        assert len(readers) == 1, readers
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        # the reader notices its stdin closed and exits; it is reparented meanwhile, so poll /proc
        wait_for(lambda: not alive(readers[0]), 10, "the orphaned reader process to exit")
    finally:
        stop(p)


def test_reader_process_protocol_pipe_is_not_polluted_by_prints(mariadb_available, schema):
    """The child's main(): whatever it prints goes to stderr, never into the protocol on stdout."""
    import json

    from funboost_mysql_cdc.options import MysqlCdcOptions
    from conftest import CONN
    with connect() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        log_file, log_pos = cur.fetchone()[:2]
    code = ("import funboost_mysql_cdc.binlog as b\n"
            "orig = b.read_binlog\n"
            "def noisy(*a, **k):\n"
            "    print('noise on stdout', flush=True)\n"
            "    return orig(*a, **k)\n"
            "b.read_binlog = noisy\n"
            "from funboost_mysql_cdc.reader_process import main\n"
            "main()\n")
    config = {"options": MysqlCdcOptions(**CONN, schemas=[schema]).model_dump(mode="json"), "queue": "q",
              "resume": {"log_file": log_file, "txn_pos": int(log_pos)}, "gtid": None, "is_mariadb": True}
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        p.stdin.write(json.dumps(config).encode() + b"\n")
        p.stdin.flush()
        insert(schema, range(0, 3), per_txn=3)
        lines = [p.stdout.readline() for _ in range(5)]  # connected, boundary (the fake rotate), R + 3 bodies
    finally:
        p.kill()
        p.wait(10)
    assert lines[0] == b"C\n", lines
    assert not any(b"noise" in line for line in lines), lines
    assert any(line.startswith(b"R\t") for line in lines), lines
    assert b"noise on stdout" in p.stderr.read()
