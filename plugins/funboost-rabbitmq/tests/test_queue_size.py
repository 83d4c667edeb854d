"""``queue_size()`` counts this process's consumer whichever broker instance asks: the engine's consumer has
a broker instance of its own, and ``booster.queue_size()`` asks the booster's. ``ready`` includes what this
process prefetched and did not start, ``in_flight`` what it runs and has not acked."""
from __future__ import annotations

import json
import threading

from funboost import BoosterParams, boost
from funboost.plugins.broker import OutgoingMessage, QueueSize
from funboost.testing import fetch_until

from conftest import wait_until


def _msgs(n: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(body=json.dumps({"x": i}), task_id=f"t{i}") for i in range(n)]


def test_sizes_include_the_consumer_of_another_broker_instance(make_broker, queue_name):
    consumer = make_broker(queue_name, prefetch_count=10)
    other = make_broker(queue_name)  # as booster.broker: never fetched from
    other.publish(_msgs(5))
    running = fetch_until(consumer, 3, max_batch=3)  # the engine took 3 (its free capacity)
    wait_until(lambda: consumer._subscription.buffered() == 2, 10, message="2 prefetched, not started")
    for b in (other, consumer):
        assert b.queue_size() == QueueSize(ready=2, in_flight=3, delayed=None)
    consumer.ack(running)
    wait_until(lambda: other.queue_size() == QueueSize(ready=2, in_flight=0, delayed=None), 10,
               message="acked: nothing in flight")
    # purge drops every ready message, the consumer's prefetched ones too
    assert other.purge() == 2
    assert other.queue_size() == QueueSize(ready=0, in_flight=0, delayed=None)
    assert consumer.fetch(10, 0.3) == []


def test_sizes_without_a_consumer_in_this_process(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(_msgs(4))
    # other processes' share is unknown: in_flight is None, not a fake 0
    assert b.queue_size() == QueueSize(ready=4, in_flight=None, delayed=None)


def test_booster_queue_size_counts_running_and_prefetched_tasks(queue_name, rabbitmq_url):
    release = threading.Event()
    started: list[int] = []
    finished: list[int] = []
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="RABBITMQ", concurrent_num=3, state_backend="memory",
                         log_to_console=False, broker_exclusive_config={"url": rabbitmq_url}))
    def long_task(x: int) -> None:
        with lock:
            started.append(x)
        release.wait(60)
        with lock:
            finished.append(x)

    try:
        for i in range(5):
            long_task.push(i)
        long_task.consume()
        wait_until(lambda: len(started) == 3, 20, message="3 tasks running")
        wait_until(lambda: long_task.queue_size() == QueueSize(ready=2, in_flight=3, delayed=None), 10,
                   message=f"ready=2, in_flight=3 (last: {long_task.queue_size()})")
        assert long_task.get_message_count() == 2
        release.set()
        wait_until(lambda: len(finished) == 5, 20, message="all 5 ran")
        wait_until(lambda: long_task.queue_size() == QueueSize(ready=0, in_flight=0, delayed=None), 10,
                   message="all acked")
    finally:
        release.set()
        long_task.stop_consume(10)
        long_task.broker.delete_queues()
