"""The key guarantee: a consumer process killed mid-run loses nothing (two real consumer processes)."""
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from funboost.plugins.broker import OutgoingMessage

from funboost_sqlite import SqliteBroker

from conftest import wait_for, worker_cmd

N = 400


def read_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and line.strip() != "READY"]


def start_workers(tmp_path, queue_name, options, sleep=0.004):
    outs = [str(tmp_path / f"w{k}.out") for k in range(2)]
    procs = [subprocess.Popen(worker_cmd(queue_name, out, sleep, json.dumps(options))) for out in outs]
    wait_for(lambda: all(os.path.exists(o) for o in outs), what="workers started")
    return procs, outs


def publish_all(queue_name, options):
    b = SqliteBroker(queue_name, SqliteBroker.parse_options(options))
    task_ids = [f"task-{i}" for i in range(N)]
    b.publish([OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": t}}), task_id=t)
               for i, t in enumerate(task_ids)])
    return b, task_ids


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.mark.parametrize("options", [
    pytest.param({}, id="pid-check"),  # same host: the dead pid is noticed at the next reclaim pass
    pytest.param({"check_pid": False, "heartbeat_interval": 0.2, "heartbeat_timeout": 1.0,
                  "reclaim_interval": 0.3}, id="heartbeat-expiry"),
])
def test_sigkill_one_of_two_consumers_loses_nothing(sqlite_dir, tmp_path, queue_name, options):
    b, task_ids = publish_all(queue_name, options)
    procs, outs = start_workers(tmp_path, queue_name, options)
    try:
        wait_for(lambda: len(read_ids(outs[0])) >= 40, what="victim ran some tasks")
        freeze_outside_a_write(procs[0], b._db.path)  # so that it dies holding messages
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        wait_for(lambda: b.queue_size().total == 0, timeout=60, what="queue drained by the survivor")
    finally:
        stop(procs)
        b.close()
    ran = {t.replace("R:", "") for o in outs for t in read_ids(o)}
    assert ran == set(task_ids), f"lost: {sorted(set(task_ids) - ran)[:10]}"
    # the survivor really got the victim's in-flight messages back
    assert any(t.startswith("R:") for t in read_ids(outs[1]))


def freeze_outside_a_write(proc, db_path: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds in-flight messages but no write lock on the queue file.

    A process frozen inside a sqlite write transaction blocks every writer of that file until it runs
    again (sqlite's locking, not something a heartbeat can undo), and one frozen between an ack and its
    next fetch holds nothing to reclaim; this test is about the heartbeat, so: stop, check the write lock
    is free and the victim holds messages, else let it run a moment and try again."""
    for _ in range(500):
        proc.send_signal(signal.SIGSTOP)
        conn = sqlite3.connect(db_path, timeout=0.3, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            held = conn.execute("SELECT count(*) FROM messages m JOIN consumers c ON m.consumer = c.id "
                                "WHERE m.state = 1 AND c.pid = ?", (proc.pid,)).fetchone()[0]
            if held:
                return
        except sqlite3.OperationalError:  # locked by the frozen victim
            pass
        finally:
            conn.close()
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("could not freeze the victim holding messages outside a write transaction")


def test_hung_consumer_is_reclaimed_by_heartbeat(sqlite_dir, tmp_path, queue_name):
    """A frozen process (SIGSTOP) still exists, so only its stale heartbeat can free its messages."""
    options = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0, "reclaim_interval": 0.3}
    b, task_ids = publish_all(queue_name, options)
    procs, outs = start_workers(tmp_path, queue_name, options)
    try:
        wait_for(lambda: len(read_ids(outs[0])) >= 20, what="victim ran some tasks")
        freeze_outside_a_write(procs[0], b._db.path)
        wait_for(lambda: b.queue_size().total == 0, timeout=60, what="queue drained by the survivor")
    finally:
        stop(procs)
        b.close()
    ran = {t.replace("R:", "") for o in outs for t in read_ids(o)}
    assert ran == set(task_ids)
    assert any(t.startswith("R:") for t in read_ids(outs[1]))


def test_purge_drops_what_a_dead_consumer_held(sqlite_dir, tmp_path, queue_name):
    """clear() after a consumer died kept its in-flight messages: they came back at the next reclaim pass
    and ran after the clear. A living consumer's in-flight messages stay (they are running)."""
    b, task_ids = publish_all(queue_name, {})
    survivor = SqliteBroker(queue_name, SqliteBroker.parse_options({}))
    live = survivor.fetch(2, 1.0)  # a living consumer's in-flight messages
    assert len(live) == 2
    outs = [str(tmp_path / "victim.out")]
    victim = subprocess.Popen(worker_cmd(queue_name, outs[0], 0.05, "{}"))
    try:
        wait_for(lambda: len(read_ids(outs[0])) >= 3, what="victim ran some tasks")
        freeze_outside_a_write(victim, b._db.path)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert b.queue_size().in_flight > 2, "the victim died holding nothing: the test proves nothing"
        before = b.queue_size()
        dropped = b.purge()
        assert dropped == before.ready + before.delayed + before.in_flight - 2, (dropped, before)
        size = b.queue_size()
        assert (size.ready, size.delayed, size.in_flight) == (0, 0, 2), size
        rows = sqlite3.connect(b._db.path).execute(
            "SELECT count(*) FROM messages WHERE queue = ?", (queue_name,)).fetchone()[0]
        assert rows == 2, f"{rows} rows left: the dead consumer's in-flight messages survived the purge"
        survivor.ack(live)
    finally:
        stop([victim])
        survivor.close()
        b.close()
