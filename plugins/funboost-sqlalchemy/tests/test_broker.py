"""Broker-level tests of SqlAlchemyBroker on PostgreSQL, MariaDB and sqlite (real databases, no mocks)."""
import threading
import time

import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost.testing.table_queue import (check_consumers_never_share_a_row,
                                          check_live_consumer_long_task_is_never_reclaimed,
                                          check_publish_wakes_a_sleeping_fetch, ids, msg, sizes)
from funboost.testing.table_queue import (  # noqa: F401 - the shared tests, collected here
    test_publish_fetch_ack_sizes, test_purge_keeps_in_flight, test_reject_moves_to_dlx,
    test_requeue_goes_to_the_tail)

from funboost_sqlalchemy import SqlAlchemyBroker, SqlAlchemyOptions

from conftest import wait_for


def test_kind_names_resolve():
    for name in ("SQLALCHEMY", "sqlalchemy", "SQLACHEMY", "sqlachemy"):
        assert resolve_broker_kind(name) is SqlAlchemyBroker


def test_options(monkeypatch, tmp_path):
    with pytest.raises(ValueError):
        SqlAlchemyOptions(unknown=1)
    with pytest.raises(ValueError):
        SqlAlchemyOptions(table_prefix="bad-prefix; drop")
    with pytest.raises(ValueError):
        SqlAlchemyOptions(heartbeat_interval=5, heartbeat_timeout=6)
    monkeypatch.setenv("FUNBOOST_SQLALCHEMY_URL", f"sqlite:///{tmp_path}/x.db")
    monkeypatch.setenv("FUNBOOST_SQLALCHEMY_TABLE_PREFIX", "mine_")
    o = SqlAlchemyOptions()
    assert (o.url, o.table_prefix) == (f"sqlite:///{tmp_path}/x.db", "mine_")
    monkeypatch.delenv("FUNBOOST_SQLALCHEMY_URL")
    monkeypatch.setenv("FUNBOOST_DATA_DIR", str(tmp_path / "data"))
    assert SqlAlchemyOptions().url == f"sqlite:///{tmp_path / 'data' / 'sqlalchemy_queues.sqlite3'}"
    reason = SqlAlchemyBroker.check_available(SqlAlchemyOptions(url="mysql+pymysql://nobody:secret@127.0.0.1:1/x"))
    assert reason and "cannot connect" in reason and "secret" not in reason


def test_auto_claim_mode(make_broker, db, queue_name):
    expected = {"postgresql": "skip_locked", "mariadb": "skip_locked", "sqlite": "update"}[db]
    assert make_broker(queue_name)._mode() == expected


@pytest.mark.parametrize("claim", ["auto", "update", "for_update"])
def test_concurrent_consumers_never_share_a_row(make_broker, db, queue_name, claim):
    if db == "sqlite" and claim == "for_update":
        pytest.skip("sqlite has no row locks (FOR UPDATE is not rendered)")
    consumers = [make_broker(queue_name, claim=claim) for _ in range(3)]
    check_consumers_never_share_a_row(make_broker(queue_name), consumers, n=400, batch=15, fetch_timeout=0.5,
                                      join_timeout=120)


def test_priority_and_delay(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish([msg(0, priority=1), msg(1), msg(2, priority=5), msg(3, eta=time.time() + 0.8, priority=9)])
    assert sizes(b) == {"ready": 3, "in_flight": 0, "delayed": 1}
    assert ids(b.fetch(10, 0.1)) == [2, 0, 1]
    got = b.fetch(10, 10)
    assert ids(got) == [3]


def test_live_consumer_long_task_is_never_reclaimed(make_broker, queue_name):
    check_live_consumer_long_task_is_never_reclaimed(  # for three heartbeat timeouts
        make_broker, queue_name, dict(heartbeat_interval=0.2, heartbeat_timeout=1.0), window=3.0, poll=0.2,
        reclaim=True)


def test_expired_lease_is_reclaimed(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.2, heartbeat_timeout=1.0, check_pid=False)
    a, b = make_broker(queue_name, **opts), make_broker(queue_name, **opts)
    a.publish([msg(1)])
    assert ids(a.fetch(1, 1)) == [1]
    a._lease.stop()  # a frozen consumer: alive (same pid) but no longer renewing
    got = []
    wait_for(lambda: got.extend(b.fetch(1, 0.2)) or got, timeout=15, what="reclaimed row")
    assert ids(got) == [1] and got[0].redelivered
    b.ack(got)
    a.ack([])  # the stale consumer's ack of a reclaimed row deletes nothing


def test_publish_in_the_same_process_wakes_a_sleeping_fetch(make_broker, queue_name):
    consumer = make_broker(queue_name, poll_min=5.0, poll_max=5.0)
    check_publish_wakes_a_sleeping_fetch(consumer, make_broker(queue_name), limit=4.0, i=5)  # far below the 5 s poll


def test_overlapping_lease_renewals_of_one_consumer_never_fail(make_broker, queue_name):
    """The first renewal at start and the ticker's may overlap on a slow database: both find no row, both
    insert it; the second one must not fail (it once raised IntegrityError and killed a consumer at start)."""
    import os
    import socket
    from funboost.engine.liveness import LeaseInfo

    b = make_broker(queue_name)
    errors = []
    for round_ in range(5):
        lease = LeaseInfo(f"{queue_name}@{socket.gethostname()}:{os.getpid()}:race{round_}", "host", os.getpid(),
                          time.time())
        start = threading.Barrier(8)

        def renew():
            start.wait()
            try:
                b._renew_lease(lease)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=renew) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]


def test_the_broker_and_the_sqlalchemy_state_backend_share_a_database_and_prefix(db, queue_name, monkeypatch):
    """Both name their tables "<prefix>...", and a user naturally points both at one database: their
    consumer tables once had the same name with different columns, so whichever came second failed."""
    from funboost.state.sqlalchemy import ENV_PREFIX, SqlAlchemyStateBackend

    from conftest import SESSION_PREFIX, URLS, options_for
    monkeypatch.setenv(ENV_PREFIX, SESSION_PREFIX)
    broker = SqlAlchemyBroker(queue_name, SqlAlchemyBroker.parse_options(options_for(db)))
    state = SqlAlchemyStateBackend(URLS[db])
    try:
        broker.publish([OutgoingMessage(body='{"x": 1}', task_id="t1")])
        [d] = broker.fetch(1, 5)  # registers this consumer in the broker's table
        state.heartbeat("c1", queue_name, {"host": "h", "pid": 1}, 30)  # and the state backend's heartbeat
        assert [c["consumer_id"] for c in state.live_consumers(queue_name)] == ["c1"]
        broker.ack([d])
    finally:
        broker.close()
        state.metadata.drop_all(state._engine.get(), checkfirst=True)
