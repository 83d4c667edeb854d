"""The automatic prefetch starts at twice the engine's capacity and grows only while the prefetch is what
holds the pool back: a consumer of long tasks does not take a backlog that a consumer started a moment
later could run (with 10x the capacity from the start, the first of two consumers with concurrent_num=2
took all 12 tasks of 0.5 s, the second ran none)."""
import os

from funboost.testing import wait_until
from funboost.testing.workers import ConsumerProcess, recording_publisher


def test_a_second_consumer_gets_a_share_of_a_backlog_of_long_tasks(rabbitmq_url, queue_name, tmp_path):
    # enough work that the first consumer alone needs ~10 s: the second one's start (a new interpreter, slower
    # on a loaded host) stays well within it. A first consumer that prefetched the backlog leaves it nothing.
    n = 40
    recording_publisher("RABBITMQ", queue_name, {"url": rabbitmq_url}).push_many(range(n))
    first = ConsumerProcess("RABBITMQ", queue_name, {"url": rabbitmq_url}, str(tmp_path / "first"), concurrency=2,
                            task_seconds=0.5)
    second = None
    try:
        wait_until(lambda: os.path.exists(tmp_path / "first") or first.done() >= 1, 30,
                   message="the first consumer is running tasks")
        second = ConsumerProcess("RABBITMQ", queue_name, {"url": rabbitmq_url}, str(tmp_path / "second"),
                                 concurrency=2, task_seconds=0.5)
        wait_until(lambda: first.done() + second.done() == n, 120, message=f"all {n} tasks ran")
        assert second.done() >= 3, f"the second consumer ran {second.done()} of {n}: the first held the backlog"
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_the_prefetch_grows_for_short_tasks(make_broker, queue_name):
    """A pool that drains the buffer faster than it refills: the prefetch grows past its start (2x the
    capacity), never past 10x."""
    from funboost.plugins.broker import OutgoingMessage
    b = make_broker(queue_name)
    b.publish([OutgoingMessage(body='{"x": %d, "extra": {"task_id": "t%d"}}' % (i, i), task_id=f"t{i}")
               for i in range(300)])
    got = 0
    while got < 300:
        batch = b.fetch(10, 5.0)  # the engine's capacity: 10
        assert batch, "the queue ran dry before 300 messages"
        b.ack(batch)
        got += len(batch)
    assert 20 < b._subscription._prefetch <= 100, b._subscription._prefetch
