"""queue_counts: the per-queue counts behind queue_size() stay equal to a real count of the rows, across
processes, after SIGKILL, after a random mix of every write, and when a version-1 file is migrated."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from funboost.plugins.broker import OutgoingMessage

from funboost_sqlite import SqliteBroker
from funboost_sqlite.db import SCHEMA_VERSION
from funboost_sqlite.paths import resolve_db_file

from _counts_worker import step
from conftest import HERE, wait_for

FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "reclaim_interval": 0.1}


def counts(path):
    """(from the rows, from queue_counts): {queue: (ready, in_flight, delayed)}, queues with any non-zero."""
    # both reads in one read transaction (one WAL snapshot): a process still writing (the survivor of the
    # SIGKILL test) commits between two separate reads, and the counts looked wrong when they were not
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN")
        real = {}
        for q, state, n in conn.execute("SELECT queue, state, count(*) FROM messages GROUP BY queue, state"):
            real.setdefault(q, [0, 0, 0])[state] = n
        kept = {q: (r, f, d) for q, r, f, d in conn.execute(
            "SELECT queue, ready, in_flight, delayed FROM queue_counts") if (r, f, d) != (0, 0, 0)}
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {q: tuple(v) for q, v in real.items()}, kept


def assert_exact(directory):
    if not os.path.isdir(directory):  # nothing written yet
        return
    for path in [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".sqlite3")]:
        real, kept = counts(path)
        assert kept == real, path


def msgs(n, **kw):
    return [OutgoingMessage(body=json.dumps({"i": i}), **kw) for i in range(n)]


# a process of the test: publishes 1 + 6, then holds 5 messages in flight until killed
HOLDER = r'''
import json, sys
from funboost.plugins.broker import OutgoingMessage
from funboost_sqlite import SqliteBroker
b = SqliteBroker(sys.argv[1], SqliteBroker.parse_options(json.loads(sys.argv[2])))
b.publish([OutgoingMessage(body="{}")])
b.publish([OutgoingMessage(body="{}") for _ in range(6)])
got = []
while len(got) < 5:
    got += b.fetch(5 - len(got), 1.0)
print("HELD", flush=True)
sys.stdin.read()
'''


def test_counts_exact_after_each_kind_of_write_with_two_processes(make_broker, queue_name, sqlite_dir):
    a = make_broker(queue_name, **FAST)
    a.publish(msgs(20))
    a.publish(msgs(1))
    a.publish(msgs(2, eta=time.time() + 600))
    a.publish(msgs(1, eta=time.time() + 600))
    assert a.queue_size().as_dict() == {"ready": 21, "in_flight": 0, "delayed": 3}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, queue_name, json.dumps(FAST)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        assert a.queue_size().as_dict() == {"ready": 23, "in_flight": 5, "delayed": 3}
        got = a.fetch(4, 1)
        assert len(got) == 4
        assert a.queue_size().as_dict() == {"ready": 19, "in_flight": 9, "delayed": 3}
        a.ack(got[:2])
        a.ack(got[:2])  # a second ack of the same messages changes nothing
        assert a.queue_size().as_dict() == {"ready": 19, "in_flight": 7, "delayed": 3}
        a.requeue(got[2:3])
        assert a.queue_size().as_dict() == {"ready": 20, "in_flight": 6, "delayed": 3}
        a.reject(got[3:], "test")
        assert a.queue_size().as_dict() == {"ready": 20, "in_flight": 5, "delayed": 3}
        assert a.dead_letter_broker().queue_size().as_dict() == {"ready": 1, "in_flight": 0, "delayed": 0}
        assert_exact(sqlite_dir)
    finally:
        holder.kill()
        holder.wait(10)
    # the holder is gone, its 5 still in flight until a fetch reclaims them (a new broker does at once)
    assert a.queue_size().in_flight == 5
    c = make_broker(queue_name, **FAST)
    one = c.fetch(1, 1)
    assert a.queue_size().as_dict() == {"ready": 24, "in_flight": 1, "delayed": 3}
    assert_exact(sqlite_dir)
    assert a.purge() == 27
    assert a.queue_size().as_dict() == {"ready": 0, "in_flight": 1, "delayed": 0}
    c.ack(one)
    assert a.queue_size().as_dict() == {"ready": 0, "in_flight": 0, "delayed": 0}
    assert_exact(sqlite_dir)


def counts_worker(queue_name, seed, steps, progress, options):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "_counts_worker.py"), queue_name, str(seed),
                             str(steps), str(progress), json.dumps(options)])


def steps_done(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip().isdigit()]
    return int(lines[-1]) if lines else 0


def drain(b, sqlite_dir):
    """Fetch and ack until nothing is ready or in flight (dead consumers' messages come back meanwhile)."""
    def empty():
        b.ack(b.fetch(100, 0.05))
        size = b.queue_size()
        return size.ready == 0 and size.in_flight == 0
    wait_for(empty, timeout=60, what="queue drained")
    assert_exact(sqlite_dir)


def test_two_processes_random_writes_then_sigkill(make_broker, queue_name, sqlite_dir, tmp_path):
    """Two processes run a random mix on one file; both are SIGKILLed mid-run (a kill lands inside a write
    transaction more often than not: they do little else). The counts equal the rows after every phase."""
    progress = [tmp_path / "p0", tmp_path / "p1"]
    procs = [counts_worker(queue_name, seed, 0, p, FAST) for seed, p in zip((1, 2), progress)]
    try:
        rnd = random.Random(7)
        wait_for(lambda: all(steps_done(p) >= 150 + rnd.randint(0, 60) for p in progress), timeout=120,
                 what="both workers busy")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        done = steps_done(progress[1])
        wait_for(lambda: steps_done(progress[1]) >= done + 100, timeout=120, what="the survivor went on")
        assert_exact(sqlite_dir)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert_exact(sqlite_dir)
    b = make_broker(queue_name, **FAST)
    drain(b, sqlite_dir)  # the killed processes' in-flight messages are reclaimed on the way


def test_two_processes_random_writes_to_the_end(make_broker, queue_name, sqlite_dir, tmp_path):
    procs = [counts_worker(queue_name, seed, 400, tmp_path / f"p{seed}", FAST) for seed in (3, 4)]
    for p in procs:
        assert p.wait(180) == 0
    assert_exact(sqlite_dir)  # each closed its broker still holding messages: they are in flight
    b = make_broker(queue_name, **FAST)
    drain(b, sqlite_dir)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_mixed_workload_in_one_process(make_broker, queue_name, sqlite_dir, seed):
    """Seeded random writes from several brokers (consumers) on one file, some closed while they hold
    messages (reclaimed once their heartbeat expires): counts equal a count(*) after every step."""
    rng = random.Random(seed)
    opts = dict(FAST, check_pid=False, heartbeat_interval=0.1, heartbeat_timeout=0.3, reclaim_interval=0.05)
    brokers = [make_broker(queue_name, **opts) for _ in range(3)]
    held = [[] for _ in brokers]
    for _ in range(600):
        k = rng.randrange(len(brokers))
        if rng.random() < 0.01:  # this consumer stops: its messages stay in flight until reclaimed
            brokers[k].close()
            brokers[k] = make_broker(queue_name, **opts)
            held[k] = []
        step(brokers[k], rng, held[k])
        assert_exact(sqlite_dir)
    for b, h in zip(brokers, held):  # the live consumers finish; the closed ones' messages come back
        b.ack(h)
    drain(brokers[0], sqlite_dir)


# ---------------------------------------------------------------- migration of a version-1 file
V1_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, queue TEXT NOT NULL, state INTEGER NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL, consumer TEXT, deliveries INTEGER NOT NULL DEFAULT 0, task_id TEXT,
    published_at REAL NOT NULL, fetched_at REAL, body TEXT NOT NULL);
CREATE INDEX messages_by_state ON messages (queue, state, priority DESC, id);
CREATE INDEX messages_delayed ON messages (queue, available_at) WHERE state = 2;
CREATE TABLE consumers (id TEXT PRIMARY KEY, queue TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started_at REAL NOT NULL, last_seen REAL NOT NULL);
PRAGMA user_version = 1;
"""


def make_v1_file(path, rows):
    """A database file as version 1 of the plugin left it; ``rows``: {queue: (ready, in_flight, delayed)}."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    now = time.time()
    conn.execute("BEGIN")
    for q, (ready, in_flight, delayed) in rows.items():
        gone = "gone-" + q
        conn.execute("INSERT INTO consumers VALUES (?, ?, 'nohost', 999999, ?, ?)", (gone, q, now - 100, now - 100))
        for state, n, at, consumer in ((0, ready, now, None), (1, in_flight, now, gone), (2, delayed, now + 600, None)):
            conn.executemany("INSERT INTO messages (queue, state, available_at, consumer, published_at, body) "
                             "VALUES (?, ?, ?, ?, ?, '{}')", [(q, state, at, consumer, now)] * n)
    conn.execute("COMMIT")
    conn.close()


def test_version1_file_is_migrated(make_broker, queue_name, sqlite_dir, tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    make_v1_file(path, {queue_name: (7, 3, 2), "other": (4, 0, 1)})
    b = make_broker(queue_name, db_path=path, **FAST)
    assert b.queue_size().as_dict() == {"ready": 7, "in_flight": 3, "delayed": 2}
    o = make_broker("other", db_path=path)
    assert o.queue_size().as_dict() == {"ready": 4, "in_flight": 0, "delayed": 1}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    real, kept = counts(path)
    assert kept == real
    got = b.fetch(100, 1)  # the first fetch reclaims the dead version-1 consumer's 3 messages
    assert len(got) == 10
    b.ack(got)
    b.publish(msgs(5))
    assert b.queue_size().as_dict() == {"ready": 5, "in_flight": 0, "delayed": 2}
    real, kept = counts(path)
    assert kept == real


OPEN_AND_PUBLISH = r'''
import sys
from funboost.plugins.broker import OutgoingMessage
from funboost_sqlite import SqliteBroker
b = SqliteBroker(sys.argv[1], SqliteBroker.parse_options({}))
for _ in range(50):
    b.publish([OutgoingMessage(body="{}")])
b.close()
'''


def test_version1_file_migrated_once_by_processes_opening_it_together(queue_name, sqlite_dir):
    """Several processes open an old file at the same moment and publish at once: one migrates it, under
    the write lock, and no publish is counted twice or lost."""
    path = resolve_db_file(queue_name, None, str(sqlite_dir))
    make_v1_file(path, {queue_name: (2000, 0, 10)})
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_PUBLISH, queue_name]) for _ in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    real, kept = counts(path)
    assert kept == real == {queue_name: (2200, 0, 10)}


def test_recount_repairs_counts(make_broker, queue_name, sqlite_dir):
    b = make_broker(queue_name)
    b.publish(msgs(10))
    b.ack(b.fetch(3, 1))
    # a writer that does not keep the counts (a process of version 1 on a migrated file)
    conn = sqlite3.connect(b.db_file, isolation_level=None)
    conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state = 0 LIMIT 2)")
    conn.close()
    assert b.queue_size().ready == 7
    assert b.recount().as_dict() == {"ready": 5, "in_flight": 0, "delayed": 0}
    assert_exact(sqlite_dir)
