"""Shared tests of the brokers that keep their queue in database tables (sqlite, postgres, sqlalchemy).

Their semantics are one design (rows claimed by a consumer id, requeue to the tail, a ``<queue>_dlx`` dead
letter queue, priority then FIFO, purge sparing work in flight, lease renewal), so each scenario is written
once here. The ``test_*`` functions are tests a plugin collects by importing them into its
``tests/test_broker.py`` (they use its ``make_broker`` and ``queue_name`` fixtures)::

    from funboost.testing.table_queue import test_purge_keeps_in_flight  # noqa: F401 - collected here

the ``check_*`` functions are scenarios its own tests call with their broker's options. Message helpers, the
``make_broker`` bookkeeping and the README example live here for the same reason.

A ``make_broker(queue_name, **options)`` is a factory of the plugin's broker on the test's database.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from funboost.plugins.broker import Broker, Delivery, OutgoingMessage
from funboost.testing.contract.base import wait_until

MakeBroker = Callable[..., Broker]

__all__ = ["MakeBroker", "msg", "ids", "sizes", "wait_for", "tracked_brokers",
           "test_publish_fetch_ack_sizes", "test_requeue_goes_to_the_tail", "test_reject_moves_to_dlx",
           "test_priority_then_fifo", "test_purge_keeps_in_flight", "check_queues_are_isolated",
           "check_consumers_never_share_a_row", "check_live_consumer_long_task_is_never_reclaimed",
           "check_publish_wakes_a_sleeping_fetch", "check_readme_example"]


def msg(i: int, **kw: Any) -> OutgoingMessage:
    """Message number ``i`` (body ``{"i": i, ...}``, task id ``id<i>``); ``kw``: priority, eta ..."""
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": f"id{i}"}}), task_id=f"id{i}", **kw)


def ids(deliveries: Iterable[Delivery]) -> list[int]:
    """The numbers of the messages made by :func:`msg`, in delivery order."""
    return [json.loads(d.body)["i"] for d in deliveries]


def sizes(b: Broker) -> dict[str, Optional[int]]:
    """``{"ready": .., "in_flight": .., "delayed": ..}`` of ``b``'s queue."""
    return b.queue_size().as_dict()


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = "condition") -> Any:
    """:func:`funboost.testing.wait_until` with the longer default these database tests use."""
    return wait_until(cond, timeout, interval, what)


def tracked_brokers(build: Callable[[str, dict[str, Any]], Broker], purge: bool = True) -> Iterator[MakeBroker]:
    """Body of a ``make_broker`` fixture (``yield from tracked_brokers(...)``): yields
    ``make(queue_name, **options)``, which builds a broker with ``build(queue_name, options)``; at the end each
    one made is purged (when ``purge``: shared databases keep no test rows; errors ignored) and closed."""
    made: list[Broker] = []

    def make(queue_name: str, **options: Any) -> Broker:
        b = build(queue_name, options)
        made.append(b)
        return b

    yield make
    for b in made:
        if purge:
            try:
                b.purge()
            except Exception:  # noqa: BLE001 - best-effort cleanup; close() below still runs
                pass
        b.close()


def test_publish_fetch_ack_sizes(make_broker: MakeBroker, queue_name: str) -> None:
    """FIFO fetch in batches, no redelivered flag on a first delivery, sizes at each step, empty batches."""
    b = make_broker(queue_name)
    b.publish([msg(i) for i in range(10)])
    assert sizes(b) == {"ready": 10, "in_flight": 0, "delayed": 0}
    got = b.fetch(4, 1)
    assert ids(got) == [0, 1, 2, 3] and not any(d.redelivered for d in got)
    assert sizes(b) == {"ready": 6, "in_flight": 4, "delayed": 0}
    b.ack(got)
    assert sizes(b) == {"ready": 6, "in_flight": 0, "delayed": 0}
    rest = b.fetch(100, 1)
    assert ids(rest) == [4, 5, 6, 7, 8, 9]
    b.ack(rest)
    assert b.queue_size().total == 0
    b.ack([])  # empty batches are fine
    b.publish([])


def test_requeue_goes_to_the_tail(make_broker: MakeBroker, queue_name: str) -> None:
    """A requeued message goes back behind the others, flagged redelivered."""
    b = make_broker(queue_name)
    b.publish([msg(i) for i in range(3)])
    first = b.fetch(1, 1)
    assert ids(first) == [0]
    b.requeue(first)
    assert sizes(b) == {"ready": 3, "in_flight": 0, "delayed": 0}
    again = b.fetch(10, 1)
    assert ids(again) == [1, 2, 0]
    assert [d.redelivered for d in again] == [False, False, True]
    b.ack(again)
    assert b.queue_size().total == 0


def test_reject_moves_to_dlx(make_broker: MakeBroker, queue_name: str) -> None:
    """A rejected message leaves the queue for ``<queue>_dlx``, with the reason in its extra."""
    b = make_broker(queue_name)
    b.publish([msg(1), msg(2)])
    got = b.fetch(2, 1)
    b.reject(got[:1], "bad input")
    assert sizes(b) == {"ready": 0, "in_flight": 1, "delayed": 0}
    b.ack(got[1:])
    assert b.queue_size().total == 0
    dlx = make_broker(queue_name + "_dlx")
    [dead] = dlx.fetch(10, 1)
    body = json.loads(dead.body)
    assert body["i"] == 1 and body["extra"]["dead_letter_reason"] == "bad input"
    dlx.ack([dead])


def test_priority_then_fifo(make_broker: MakeBroker, queue_name: str) -> None:
    """Higher priority first; FIFO among equal priorities (none counts as 0)."""
    b = make_broker(queue_name)
    b.publish([msg(0, priority=1), msg(1), msg(2, priority=5), msg(3, priority=1), msg(4, priority=5)])
    assert ids(b.fetch(10, 1)) == [2, 4, 0, 3, 1]


def test_purge_keeps_in_flight(make_broker: MakeBroker, queue_name: str) -> None:
    """purge() drops ready and delayed messages, never work in flight."""
    b = make_broker(queue_name)
    b.publish([msg(i) for i in range(5)] + [msg(9, eta=time.time() + 60)])
    held = b.fetch(2, 1)
    assert b.purge() == 4  # 3 ready + 1 delayed
    assert sizes(b) == {"ready": 0, "in_flight": 2, "delayed": 0}
    b.ack(held)


def check_queues_are_isolated(a: Broker, b: Broker) -> None:
    """Two brokers of different queues (in one database) see only their own messages."""
    a.publish([msg(1)])
    b.publish([msg(2), msg(3)])
    assert a.queue_size().ready == 1 and b.queue_size().ready == 2
    assert ids(a.fetch(10, 0.1)) == [1]
    assert b.purge() == 2


def check_consumers_never_share_a_row(publisher: Broker, consumers: Sequence[Broker], n: int, batch: int,
                                      fetch_timeout: float, join_timeout: float) -> None:
    """``n`` messages, consumers fetching concurrently in threads: each message delivered exactly once."""
    publisher.publish([msg(i) for i in range(n)])
    seen: list[int] = []
    lock = threading.Lock()

    def consume(c: Broker) -> None:
        while True:
            got = c.fetch(batch, fetch_timeout)
            if not got:
                return
            with lock:
                seen.extend(ids(got))
            c.ack(got)

    threads = [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    assert sorted(seen) == list(range(n))  # each exactly once


def check_live_consumer_long_task_is_never_reclaimed(make_broker: MakeBroker, queue_name: str, options: dict[str, Any],
                                                     window: float, poll: float, reclaim: bool) -> None:
    """A consumer whose heartbeat runs keeps its message in flight for ``window`` seconds (several heartbeat
    timeouts) while another consumer of the queue keeps fetching (and, with ``reclaim``, runs reclaim passes)."""
    a, b = make_broker(queue_name, **options), make_broker(queue_name, **options)
    a.publish([msg(1)])
    held = a.fetch(1, 1)
    assert ids(held) == [1]
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert b.fetch(1, poll) == []
        if reclaim:
            b.reclaim_now()  # type: ignore[attr-defined]
    assert sizes(a)["in_flight"] == 1
    a.ack(held)


def check_publish_wakes_a_sleeping_fetch(consumer: Broker, publisher: Broker, limit: float,
                                         fetch_timeout: float = 20.0, i: int = 1) -> None:
    """``consumer`` is idle with a long poll interval; a publish by ``publisher`` ends its fetch within ``limit``
    seconds (far below the poll interval and ``fetch_timeout``)."""
    consumer.fetch(1, 0.01)  # the first fetch is done: the consumer now sleeps between polls
    got: list[Delivery] = []
    t = threading.Thread(target=lambda: got.extend(consumer.fetch(10, fetch_timeout)))
    t.start()
    # Lets the fetch reach its sleep, so that the wake-up is what is measured; not synchronisation: the
    # assertions hold as well if the publish comes first.
    time.sleep(0.1)
    start = time.monotonic()
    publisher.publish([msg(i)])
    t.join(fetch_timeout)
    assert ids(got) == [i]
    assert time.monotonic() - start < limit
    consumer.ack(got)


def check_readme_example(queue_name: str, broker_kind: str, config: Optional[dict[str, Any]]) -> None:
    """The README example of a table broker, as written: push ``add(1, 2)`` (counted before any consumer
    runs), consume, the result and the ack arrive."""
    from funboost import BoosterParams, boost

    results: list[int] = []
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_kind, state_backend="memory",
                         log_to_console=False, broker_exclusive_config=config))
    def add(x: int, y: int) -> int:
        with lock:
            results.append(x + y)
        return x + y

    add.push(1, 2)
    assert add.get_message_count() == 1
    add.consume()
    try:
        wait_for(lambda: results == [3], what="add(1, 2) ran")
        wait_for(lambda: add.queue_size().total == 0, what="acked")
    finally:
        add.stop_consume(10)
