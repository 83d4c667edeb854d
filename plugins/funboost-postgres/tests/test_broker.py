"""Broker-level tests of PostgresBroker against the real server, in the tests' own schema (no mocks)."""
import threading
import time

import psycopg
import pytest
from funboost.plugins.manager import resolve_broker_kind
from funboost.testing.table_queue import (check_consumers_never_share_a_row,
                                          check_live_consumer_long_task_is_never_reclaimed,
                                          check_publish_wakes_a_sleeping_fetch, check_queues_are_isolated, ids, msg,
                                          sizes)
from funboost.testing.table_queue import (  # noqa: F401 - the shared tests, collected here
    test_priority_then_fifo, test_publish_fetch_ack_sizes, test_purge_keeps_in_flight, test_reject_moves_to_dlx,
    test_requeue_goes_to_the_tail)

from funboost_postgres import PostgresBroker, PostgresOptions

from conftest import TEST_DSN, wait_for


def test_kind_names_resolve():
    for name in ("POSTGRES", "postgres", "postgresql", "postgres_queue", "Postgres"):
        assert resolve_broker_kind(name) is PostgresBroker


def test_options(monkeypatch):
    with pytest.raises(ValueError):
        PostgresOptions(unknown=1)
    with pytest.raises(ValueError):
        PostgresOptions(heartbeat_interval=5, heartbeat_timeout=6)
    monkeypatch.setenv("FUNBOOST_POSTGRES_DSN", "postgresql://nobody@127.0.0.1:1/x")
    monkeypatch.setenv("FUNBOOST_POSTGRES_SCHEMA", "elsewhere")
    o = PostgresOptions()
    assert (o.dsn, o.db_schema) == ("postgresql://nobody@127.0.0.1:1/x", "elsewhere")
    reason = PostgresBroker.check_available(o)
    assert reason and "cannot connect" in reason
    assert PostgresBroker.check_available(PostgresOptions(dsn=TEST_DSN)) is None


def test_two_consumers_never_get_the_same_row(make_broker, queue_name):
    check_consumers_never_share_a_row(make_broker(queue_name), [make_broker(queue_name) for _ in range(3)],
                                      n=600, batch=25, fetch_timeout=0.3, join_timeout=60)


def test_priorities_beyond_32_bits_are_clamped(make_broker, queue_name):
    """The column is a 32-bit integer: psycopg refused 2**31 at publish (NumericValueOutOfRange)."""
    b = make_broker(queue_name)
    b.publish([msg(0, priority=-2**40), msg(1, priority=2**31), msg(2, priority=2**31 - 1), msg(3)])
    assert ids(b.fetch(10, 1)) == [1, 2, 3, 0]


def test_native_delay_wakes_a_sleeping_fetch_at_the_eta(make_broker, queue_name):
    consumer, publisher = make_broker(queue_name), make_broker(queue_name)
    consumer.fetch(1, 0.01)  # LISTENing
    got = []
    t = threading.Thread(target=lambda: got.extend(consumer.fetch(10, 30)))
    t.start()
    eta = time.time() + 1.0
    publisher.publish([msg(1, eta=eta)])  # published while the consumer sleeps: the NOTIFY carries the eta
    assert sizes(publisher)["delayed"] == 1
    t.join(30)
    assert ids(got) == [1]
    assert eta - 0.05 <= time.time() < eta + 10
    consumer.ack(got)


def test_publish_from_another_connection_wakes_fetch(make_broker, queue_name):
    # woken by the NOTIFY, not by the 30 s timeout
    check_publish_wakes_a_sleeping_fetch(make_broker(queue_name), make_broker(queue_name), limit=10,
                                         fetch_timeout=30, i=7)


def _backend_query_starts(pids):
    with psycopg.connect(TEST_DSN, autocommit=True) as c:
        return {(r[0], r[1], r[2]) for r in c.execute(
            "SELECT pid, query_start, left(query, 60) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))}


def test_idle_consumer_issues_no_queries_beyond_its_heartbeat(make_broker, queue_name):
    b = make_broker(queue_name, heartbeat_interval=0.5, heartbeat_timeout=3.0)
    b.fetch(1, 0.01)
    pids = [b._conn.info.backend_pid, b._listen_conn.info.backend_pid]
    t = threading.Thread(target=b.fetch, args=(1, 4.0))
    t.start()
    time.sleep(0.3)  # it has claimed nothing, asked for the next eta and gone to sleep on LISTEN
    with psycopg.connect(TEST_DSN, autocommit=True) as c:
        window_start = c.execute("SELECT now()").fetchone()[0]
    seen = set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        seen |= _backend_query_starts(pids)
        time.sleep(0.02)
    t.join(10)
    seen = {row for row in seen if row[1] is not None and row[1] > window_start}
    statements = {(pid, start) for pid, start, _q in seen}
    texts = {" ".join(q.split()[:2]) for _p, _s, q in seen}
    # ~6 lease renewals in 3 s, each one statement (INSERT INTO ... consumers, or WITH beat ... when it
    # includes a reclaim pass); a polling fetch would show hundreds
    assert 3 <= len(statements) <= 10, sorted(seen)
    assert texts <= {"WITH beat", "INSERT INTO"}, texts


def test_live_consumer_long_task_is_never_reclaimed(make_broker, queue_name):
    check_live_consumer_long_task_is_never_reclaimed(  # for three heartbeat timeouts
        make_broker, queue_name, dict(heartbeat_interval=0.2, heartbeat_timeout=1.0), window=3.0, poll=0.2,
        reclaim=True)


def test_closed_consumer_with_work_in_flight_is_reclaimed_after_its_session_ends(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.2, heartbeat_timeout=30.0)
    a, b = make_broker(queue_name, **opts), make_broker(queue_name, **opts)
    a.publish([msg(1)])
    assert ids(a.fetch(1, 1)) == [1]
    a.close()  # its session is gone: after the grace (0.4 s), not the 30 s timeout, the row comes back
    got = b.fetch(1, 10)
    assert ids(got) == [1] and got[0].redelivered
    b.ack(got)


def test_survives_its_session_being_terminated(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish([msg(1)])
    with psycopg.connect(TEST_DSN, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (b._conn.info.backend_pid,))
    got = b.fetch(5, 5)  # the fetch reconnects
    assert ids(got) == [1]
    with psycopg.connect(TEST_DSN, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (b._conn.info.backend_pid,))
        c.execute("SELECT pg_terminate_backend(%s)", (b._listen_conn.info.backend_pid,))
    b.ack(got)  # the ack reconnects too
    b.publish([msg(2)])
    got = b.fetch(5, 5)
    assert ids(got) == [2]
    b.ack(got)
    assert b.queue_size().total == 0


def test_queues_are_isolated(make_broker, queue_name):
    check_queues_are_isolated(make_broker(queue_name + "a"), make_broker(queue_name + "b"))


def test_without_check_pid_only_lease_expiry_counts(make_broker, queue_name):
    opts = dict(heartbeat_interval=0.2, heartbeat_timeout=2.0, check_pid=False)
    a, b = make_broker(queue_name, **opts), make_broker(queue_name, **opts)
    a.publish([msg(1)])
    assert ids(a.fetch(1, 1)) == [1]
    a.close()  # session gone at once, but the session verdict is off: the lease must expire first
    closed_at = time.monotonic()
    got = []
    wait_for(lambda: got.extend(b.fetch(1, 0.2)) or got, timeout=15, what="reclaimed after lease expiry")
    assert time.monotonic() - closed_at >= 1.0  # not before most of the 2 s timeout had passed
    assert ids(got) == [1] and got[0].redelivered
    b.ack(got)


def test_rows_claimed_unseen_during_a_connection_loss_are_released(make_broker, queue_name):
    """A claim can commit while its reply is lost; the consumer then holds rows it never received. After
    reconnecting it releases every row marked with its id that it does not know about."""
    b = make_broker(queue_name)
    b.publish([msg(1), msg(2)])
    [first] = b.fetch(1, 1)
    with psycopg.connect(TEST_DSN, autocommit=True) as c:  # the lost claim: row 2 marked with b's id
        c.execute(f'UPDATE "{b._o.db_schema}".messages SET consumer = %s WHERE queue = %s AND consumer IS NULL',
                  (b.consumer_id, queue_name))
    assert sizes(b)["in_flight"] == 2
    b._claim_uncertain = True  # what a broken connection during the claim sets
    got = b.fetch(5, 2)
    assert ids(got) == [2]  # released, then claimed again (and really handed out this time)
    b.ack([first] + got)
    assert b.queue_size().total == 0
