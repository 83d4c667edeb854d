"""Values longer than the columns of the (unchanged) table schema, and priorities at the 32-bit limits, on
PostgreSQL, MariaDB and sqlite: long queue names can be consumed, long task ids published, and the extreme
priorities published and ordered (audit E: DataError on MariaDB / PostgreSQL before)."""
import json
import os
import uuid

import pytest
import sqlalchemy as sa
from funboost.plugins.broker import OutgoingMessage, dead_letter_queue_name

from funboost_sqlalchemy.broker import make_tables

# the widths of the columns as earlier versions created them (users' tables keep them)
_, _MESSAGES, _CONSUMERS = make_tables("x_")
QUEUE_LEN = _MESSAGES.c.queue.type.length
CONSUMER_LEN = _MESSAGES.c.consumer.type.length
TASK_ID_LEN = _MESSAGES.c.task_id.type.length
assert (QUEUE_LEN, CONSUMER_LEN, TASK_ID_LEN, _CONSUMERS.c.id.type.length) == (255, 128, 64, 128)


def msg(i, **kw):
    return OutgoingMessage(body=json.dumps({"i": i}), **kw)


def ids(deliveries):
    return [json.loads(d.body)["i"] for d in deliveries]


def long_name(n):
    return (f"t_{uuid.uuid4().hex[:12]}_").ljust(n, "q")


def column_values(broker, *cols):
    m = broker.messages
    with broker.engine.connect() as c:
        key = getattr(broker, "_qkey", broker.queue_name)
        return c.execute(sa.select(*[m.c[x] for x in cols]).where(m.c.queue == key)).all()


def test_bounded_forms():
    from funboost_sqlalchemy.broker import (RANK_MAX, bounded_consumer_id, bounded_queue, bounded_task_id,
                                            priority_rank)
    short = "q" * QUEUE_LEN
    assert bounded_queue(short) == short  # normal lengths are stored as they are
    a, b = "a" * 300, "a" * 299 + "b"
    assert len(bounded_queue(a)) == QUEUE_LEN and bounded_queue(a) != bounded_queue(b)
    assert bounded_queue(a) == bounded_queue(a)  # the same name always maps to the same key
    cid = "x" * 200 + "@host.example:12345:0123456789ab"
    bc = bounded_consumer_id(cid)
    assert len(bc) == CONSUMER_LEN and bc.endswith(":12345:0123456789ab")
    assert bounded_consumer_id("q@h:1:ab") == "q@h:1:ab"
    tid = "order-42-" + "f" * 64
    assert len(bounded_task_id(tid)) == TASK_ID_LEN and bounded_task_id("t" * TASK_ID_LEN) == "t" * TASK_ID_LEN
    assert bounded_task_id("") is None and bounded_task_id(None) is None
    assert priority_rank(-2**31) == RANK_MAX and priority_rank(2**31 - 1) == -RANK_MAX
    assert priority_rank(2**40) == -RANK_MAX and priority_rank(None) == 0 and priority_rank(7) == -7


@pytest.mark.parametrize("length", [110, 300])
def test_long_queue_name_is_consumed(make_broker, db, length):
    qn = long_name(length)
    b = make_broker(qn)
    b.publish([msg(i) for i in range(4)])
    assert b.queue_size().ready == 4
    got = b.fetch(4, 5)  # registers the lease (consumer row) and claims: DataError before
    assert ids(got) == [0, 1, 2, 3]
    # the unique tail of the consumer id is kept
    assert b.consumer_id.endswith(f":{os.getpid()}:" + b.consumer_id.rsplit(":", 1)[1])
    if db != "sqlite":
        assert len(b.consumer_id) <= CONSUMER_LEN
    assert b.queue_size().in_flight == 4
    assert {r[0] for r in column_values(b, "consumer")} == {b.consumer_id}
    b.ack(got[:1])
    b.requeue(got[1:2])
    b.reject(got[2:3], "bad")
    assert ids(b.fetch(4, 5)) == [1] and b.queue_size().in_flight == 2  # got[3] still held, and the requeued one
    dlx = make_broker(dead_letter_queue_name(qn))
    dead = dlx.fetch(5, 5)
    assert ids(dead) == [2]
    dlx.ack(dead)
    # a consumer of the same long queue that died: its rows come back
    other = make_broker(qn)
    other.publish([msg(9)])
    held = other.fetch(1, 5)
    assert ids(held) == [9]
    other._lease.stop()
    cons = other.consumers
    with other.engine.begin() as c:
        c.execute(sa.delete(cons).where(cons.c.id == other.consumer_id))  # its lease is gone: dead
    assert b.reclaim_now() == 1
    assert ids(b.fetch(5, 5)) == [9]
    if db != "sqlite":  # a forked child's new consumer id is bounded the same way
        new = b._lease._new_id(qn)
        assert new != b.consumer_id and len(new) <= CONSUMER_LEN


def test_normal_consumer_id_and_queue_unchanged(make_broker, queue_name):
    b = make_broker(queue_name)
    assert getattr(b, "_qkey", queue_name) == queue_name and b.consumer_id.startswith(queue_name + "@")
    b.publish([msg(1, task_id="id1")])
    got = b.fetch(1, 5)
    assert column_values(b, "consumer", "task_id") == [(b.consumer_id, "id1")]
    b.ack(got)


def test_long_task_id_is_published(make_broker, db, queue_name):
    b = make_broker(queue_name)
    tid = "order-42-" + "0123456789abcdef" * 4  # 73 characters
    b.publish([msg(1, task_id=tid), msg(2, task_id="short")])
    stored = sorted(r[0] for r in column_values(b, "task_id"))
    if db == "sqlite":
        assert stored == sorted([tid, "short"])  # sqlite enforces no widths: stored as it is
    else:
        assert "short" in stored and len(stored) == 2 and all(len(t) <= TASK_ID_LEN for t in stored)
    got = b.fetch(2, 5)
    assert ids(got) == [1, 2]
    b.requeue(got[:1])
    b.reject(got[1:], "bad")
    again = b.fetch(1, 5)
    assert ids(again) == [1]
    b.ack(again)
    dlx = make_broker(dead_letter_queue_name(queue_name))
    dead = dlx.fetch(1, 5)
    assert ids(dead) == [2]
    dlx.ack(dead)


def test_extreme_priorities(make_broker, db, queue_name):
    b = make_broker(queue_name)
    prios = [0, -2**31, 2**31 - 1, -2**31 + 1, 5, -2**31, 2**40, -1]
    b.publish([msg(i, priority=p) for i, p in enumerate(prios)])
    got = b.fetch(len(prios), 5)
    # highest first, FIFO within a priority; on the databases with a 32-bit rank 2**40 is stored as 2**31-1
    # (after it: FIFO) and -2**31 as -2**31+1 (FIFO with it); sqlite's rank is 64-bit
    order = ids(got)
    if db == "sqlite":
        assert order == [6, 2, 4, 0, 7, 3, 1, 5]
    else:
        assert order == [2, 6, 4, 0, 7, 1, 3, 5]
    b.ack(got)
