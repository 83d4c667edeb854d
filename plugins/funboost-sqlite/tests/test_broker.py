"""Broker-level tests of SqliteBroker against real sqlite files (no mocks)."""
import os
import subprocess
import sys
import threading
import time

import pytest
from funboost.plugins.manager import resolve_broker_kind
from funboost.testing.table_queue import (check_live_consumer_long_task_is_never_reclaimed,
                                          check_publish_wakes_a_sleeping_fetch, check_queues_are_isolated, ids, msg)
from funboost.testing.table_queue import (  # noqa: F401 - the shared tests, collected here
    test_priority_then_fifo, test_publish_fetch_ack_sizes, test_purge_keeps_in_flight, test_reject_moves_to_dlx,
    test_requeue_goes_to_the_tail)

from funboost_sqlite import SqliteBroker, SqliteOptions
from funboost_sqlite.paths import queue_file_name, resolve_db_file, user_data_dir

from conftest import wait_for


def test_kind_names_resolve():
    for name in ("sqlite", "SQLITE_QUEUE", "sqlite_queue", "sqlite3", "persistqueue", "Sqlite"):
        assert resolve_broker_kind(name) is SqliteBroker


def test_fetch_timeout_when_empty(make_broker, queue_name):
    b = make_broker(queue_name)
    t = time.monotonic()
    assert b.fetch(10, 0.2) == []
    assert time.monotonic() - t >= 0.19


def test_publish_wakes_fetch_in_same_process(make_broker, queue_name):
    # poll_max is huge: only the in-process condition can wake the fetch in time
    b = make_broker(queue_name, poll_min=5.0, poll_max=5.0)
    check_publish_wakes_a_sleeping_fetch(b, make_broker(queue_name), limit=2.5)  # far below the 5 s poll


def test_native_delay(make_broker, queue_name):
    b = make_broker(queue_name)
    eta = time.time() + 0.6
    b.publish([msg(1, eta=eta), msg(2)])
    assert b.queue_size().as_dict() == {"ready": 1, "in_flight": 0, "delayed": 1}
    assert ids(b.fetch(10, 0.05)) == [2]
    got = b.fetch(10, 10)
    assert ids(got) == [1]
    assert time.time() >= eta - 0.01
    b.ack(got)


def test_due_delayed_counts_as_ready_and_keeps_priority(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish([msg(1), msg(2, eta=time.time() + 0.2, priority=3)])
    wait_for(lambda: b.queue_size().delayed == 0, what="eta passes")
    assert b.queue_size().ready == 2
    assert ids(b.fetch(10, 1)) == [2, 1]


def test_queues_are_isolated_in_a_shared_file(tmp_path, monkeypatch, queue_name):
    monkeypatch.setenv("FUNBOOST_SQLITE_PATH", str(tmp_path / "all.db"))
    a, b = SqliteBroker(queue_name + "a"), SqliteBroker(queue_name + "b")
    try:
        assert a.db_file == b.db_file == str(tmp_path / "all.db")
        check_queues_are_isolated(a, b)
    finally:
        a.close()
        b.close()


def test_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("FUNBOOST_SQLITE_DIR", raising=False)
    monkeypatch.delenv("FUNBOOST_SQLITE_PATH", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FUNBOOST_DATA_DIR", raising=False)
    if sys.platform.startswith("linux"):
        assert user_data_dir() == tmp_path / "xdg" / "funboost"
    default = resolve_db_file("q")
    assert not default.startswith(os.getcwd() + os.sep) and os.path.dirname(default) != os.sep
    assert resolve_db_file("q", db_dir=str(tmp_path)) == str(tmp_path / "q.sqlite3")
    assert resolve_db_file("q", db_path=str(tmp_path / "x.db")) == str(tmp_path / "x.db")
    monkeypatch.setenv("FUNBOOST_SQLITE_DIR", str(tmp_path / "d"))
    assert resolve_db_file("q") == str(tmp_path / "d" / "q.sqlite3")
    monkeypatch.setenv("FUNBOOST_SQLITE_PATH", str(tmp_path / "one.db"))
    assert resolve_db_file("q") == str(tmp_path / "one.db")
    # odd queue names give distinct, safe file names
    names = {queue_file_name(n) for n in ("a/b", "a_b", "a b", "../x", "é")}
    assert len(names) == 5 and all("/" not in n and not n.startswith(".") for n in names)


def test_options_validation():
    with pytest.raises(ValueError):
        SqliteOptions(unknown=1)
    with pytest.raises(ValueError):
        SqliteOptions(heartbeat_interval=5, heartbeat_timeout=6)
    with pytest.raises(ValueError):
        SqliteOptions(db_path="/tmp/x", db_dir="/tmp")
    assert SqliteBroker.check_available(SqliteOptions()) is None


@pytest.mark.parametrize("file_lock", [False, True])
def test_many_threads_publish_and_consume(make_broker, queue_name, file_lock):
    pub, con = make_broker(queue_name, file_lock=file_lock), make_broker(queue_name, file_lock=file_lock)
    n_threads, per = 8, 250
    seen = []
    lock = threading.Lock()

    def produce(k):
        for i in range(per):
            pub.publish([msg(k * per + i)])

    def consume():
        while True:
            got = con.fetch(20, 0.5)
            if not got:
                if len(seen) >= n_threads * per:
                    return
                continue
            with lock:
                seen.extend(ids(got))
            con.ack(got)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
    threads += [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == list(range(n_threads * per))
    assert con.queue_size().total == 0


def test_live_consumer_long_task_is_not_reclaimed(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.1, heartbeat_timeout=0.5, reclaim_interval=0.1, check_pid=False)
    # a's heartbeat thread keeps it alive well past the timeout
    check_live_consumer_long_task_is_never_reclaimed(make_broker, queue_name, opts, window=1.5, poll=0.1,
                                                     reclaim=False)


def test_close_keeps_running_work_until_expiry(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.1, heartbeat_timeout=0.5, reclaim_interval=0.1, check_pid=False)
    a, b = make_broker(queue_name, **opts), make_broker(queue_name, **opts)
    a.publish([msg(1)])
    assert ids(a.fetch(1, 1)) == [1]
    a.close()  # the task is "still running": not released at once ...
    assert b.fetch(1, 0.05) == []
    got = b.fetch(1, 10)  # ... but it comes back once a's heartbeat has expired
    assert ids(got) == [1] and got[0].redelivered
    b.ack(got)


def test_other_process_publishes(make_broker, queue_name, sqlite_dir):
    b = make_broker(queue_name)
    code = ("import json,sys; from funboost_sqlite import SqliteBroker; "
            "from funboost.plugins.broker import OutgoingMessage as M; b=SqliteBroker(sys.argv[1]); "
            "b.publish([M(body=json.dumps({'i': i, 'extra': {}})) for i in range(50)]); b.close()")
    subprocess.run([sys.executable, "-c", code, queue_name], check=True, timeout=60)
    got = []
    wait_for(lambda: got.extend(b.fetch(100, 0.2)) or len(got) == 50, what="50 messages")
    assert sorted(ids(got)) == list(range(50))
    b.ack(got)


def test_broker_can_be_used_again_after_close(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.1, heartbeat_timeout=0.5, reclaim_interval=0.1, check_pid=False)
    a, b = make_broker(queue_name, **opts), make_broker(queue_name, **opts)
    a.publish([msg(1)])
    a.close()
    a.publish([msg(2)])  # reopened on use
    got = a.fetch(10, 1)
    assert ids(got) == [1, 2]
    # the heartbeat runs again: b does not take a's messages although a was closed once
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert b.fetch(1, 0.1) == []
    a.ack(got)
    assert a.queue_size().total == 0
