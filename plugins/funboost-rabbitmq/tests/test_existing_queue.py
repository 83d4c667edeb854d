"""Using a queue that already exists with other arguments (e.g. created by another tool as a plain durable
queue): ``dead_letter_exchange=None`` declares no dead-letter arguments, ``passive=True`` uses the queue as
it is; a consumer that cannot declare its queue logs one ERROR that says how to fix it and stops, instead of
reconnecting in a loop."""
from __future__ import annotations

import json
import logging
from typing import Callable, Iterator, Optional

import pika
import pytest

from funboost.plugins.broker import OutgoingMessage, dead_letter_queue_name
from funboost.testing import fetch_until
from funboost_rabbitmq import RabbitmqOptions
from funboost_rabbitmq.broker import QueueArgumentsMismatch, QueueNotFound, delete_queues
from funboost_rabbitmq.connection import get_admin

from conftest import wait_until


def _msg(x: int) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"x": x}), task_id=f"t{x}")


def _fetch(broker, n: int) -> list:
    return fetch_until(broker, n, timeout=15)


@pytest.fixture
def create_queue(rabbitmq_url: str, queue_name: str) -> Iterator[Callable[..., None]]:
    """``create_queue(arguments)``: the test's queue, made by someone else (raw pika) with one message in it.
    Deleted afterwards even if no broker was made for it."""
    def make(arguments: Optional[dict] = None) -> None:
        def declare(ch) -> None:
            ch.queue_declare(queue_name, durable=True, arguments=arguments)
            ch.basic_publish("", queue_name, b'{"x": 0}', pika.BasicProperties(delivery_mode=2))
        get_admin(rabbitmq_url, 30).run(declare)

    yield make
    delete_queues(rabbitmq_url, 30, queue_name)


def _queue_arguments_unchanged(url: str, name: str, arguments: Optional[dict]) -> bool:
    """Re-declaring with exactly the original arguments succeeds only if nobody changed them."""
    get_admin(url, 30).run(lambda ch: ch.queue_declare(name, durable=True, arguments=arguments), retries=0)
    return True


def test_options_allow_turning_the_dead_letter_exchange_off():
    assert RabbitmqOptions(dead_letter_exchange=None).dead_letter_exchange is None
    assert RabbitmqOptions(dead_letter_exchange="").dead_letter_exchange is None
    assert RabbitmqOptions().dead_letter_exchange == "funboost.dlx"  # default unchanged
    assert RabbitmqOptions().passive is False


def test_existing_plain_queue_with_max_priority_0_and_no_dead_letter_exchange(make_broker, queue_name, rabbitmq_url,
                                                                           create_queue):
    create_queue()
    b = make_broker(queue_name, max_priority=0, dead_letter_exchange=None)
    b.publish([_msg(1)])  # one by one
    b.publish([_msg(2), _msg(3)])  # batch path
    got = _fetch(b, 4)
    assert sorted(json.loads(d.body)["x"] for d in got) == [0, 1, 2, 3]
    # funboost's own dead letters still reach <queue>_dlx, published straight to it
    b.reject(got[:1], "bad input")
    b.ack(got[1:])
    dead = _fetch(b.dead_letter_broker(), 1)
    assert json.loads(dead[0].body)["extra"]["dead_letter_reason"] == "bad input"
    b.dead_letter_broker().ack(dead)
    assert _queue_arguments_unchanged(rabbitmq_url, queue_name, None)


def test_passive_uses_an_existing_queue_with_any_arguments(make_broker, queue_name, rabbitmq_url, create_queue):
    theirs = {"x-max-length": 1000, "x-message-ttl": 3_600_000}
    create_queue(theirs)
    b = make_broker(queue_name, passive=True)  # defaults otherwise: priority 10, dead-letter exchange
    b.publish([_msg(1)])
    b.publish([_msg(2), _msg(3)])
    got = _fetch(b, 4)
    assert sorted(json.loads(d.body)["x"] for d in got) == [0, 1, 2, 3]
    b.reject(got[:1], "bad input")
    b.ack(got[1:])
    dead = _fetch(b.dead_letter_broker(), 1)
    assert json.loads(dead[0].body)["extra"]["dead_letter_reason"] == "bad input"
    b.dead_letter_broker().ack(dead)
    assert _queue_arguments_unchanged(rabbitmq_url, queue_name, theirs)


def test_passive_on_a_missing_queue_is_a_clear_error(make_broker, queue_name):
    b = make_broker(queue_name, passive=True)
    with pytest.raises(QueueNotFound) as err:
        b.publish([_msg(1)])
    assert queue_name in str(err.value) and "passive" in str(err.value)


def test_mismatch_error_names_the_argument_and_the_fixes(make_broker, queue_name, create_queue):
    create_queue()
    b = make_broker(queue_name, max_priority=0)  # the old advice alone: still refused, on the DLX argument
    with pytest.raises(QueueArgumentsMismatch) as err:
        b.publish([_msg(1)])
    text = str(err.value)
    assert "x-dead-letter-exchange" in text and "'dead_letter_exchange': None" in text
    assert "'passive': True" in text and "delete the queue" in text


def test_consumer_that_cannot_declare_its_queue_logs_one_error_and_stops(make_broker, queue_name, rabbitmq_url,
                                                                         create_queue, caplog):
    create_queue()  # a plain queue; the defaults declare priorities and a DLX
    b = make_broker(queue_name, reconnect_max_delay=0.2)  # a fast retry loop if it still looped
    caplog.set_level(logging.INFO, logger="funboost.rabbitmq")
    assert b.fetch(10, 0.1) == []
    sub = b._subscription
    wait_until(lambda: not sub._thread.is_alive(), 15, message="the consumer thread gave up")
    assert b.fetch(10, 0.1) == []  # fetch does not fail: the error was logged once, clearly
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "funboost.rabbitmq"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    text = errors[0].getMessage()
    assert queue_name in text and "'passive': True" in text and "'dead_letter_exchange': None" in text
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert sub.reconnects == 0
    # the queue keeps its message: nothing was consumed or changed
    ok = get_admin(rabbitmq_url, 30).run(lambda ch: ch.queue_declare(queue_name, passive=True))
    assert ok.method.message_count == 1


def test_consume_on_a_queue_it_cannot_declare_raises_the_mismatch(queue_name, rabbitmq_url, create_queue):
    """Through @boost: consume() itself raises (core's Broker.prepare_consume), rather than returning a
    consumer that sends heartbeats and runs nothing."""
    from funboost import BoosterParams, boost
    create_queue()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="RABBITMQ", state_backend="memory",
                         broker_exclusive_config={"url": rabbitmq_url}, log_to_console=False))
    def work(x):
        pass

    with pytest.raises(QueueArgumentsMismatch, match="passive"):
        work.consume()
    assert work.consumer is None  # nothing left half started
    ok = get_admin(rabbitmq_url, 30).run(lambda ch: ch.queue_declare(queue_name, passive=True))
    assert ok.method.message_count == 1


def test_dead_letter_queue_of_a_queue_without_dlx_has_no_dlx_arguments(make_broker, queue_name, rabbitmq_url):
    b = make_broker(queue_name, dead_letter_exchange=None, max_priority=0)
    b.publish([_msg(1)])
    dlq = dead_letter_queue_name(queue_name)
    assert _queue_arguments_unchanged(rabbitmq_url, queue_name, None)
    assert _queue_arguments_unchanged(rabbitmq_url, dlq, None)


def test_consumer_resumes_after_its_queue_was_deleted(make_broker, queue_name, rabbitmq_url):
    """RabbitMQ cancels the consumer of a deleted queue (basic.cancel); the consumer must notice, reconnect
    and declare the queue again instead of serving a dead subscription for good."""
    b = make_broker(queue_name, reconnect_max_delay=0.2)
    b.publish([_msg(1)])
    got = _fetch(b, 1)
    b.ack(got)
    sub = b._subscription
    get_admin(rabbitmq_url, 30).run(lambda ch: ch.queue_delete(queue_name))
    wait_until(lambda: sub.reconnects >= 1 and sub.connected.is_set(), 15,
               message="the consumer noticed the cancel and reconnected")

    def declare_and_publish(ch) -> None:  # a producer that knows nothing of the consumer
        ch.basic_publish("", queue_name, json.dumps({"x": 2}).encode(), pika.BasicProperties(delivery_mode=2))
    get_admin(rabbitmq_url, 30).run(declare_and_publish)
    got = _fetch(b, 1)
    assert len(got) == 1
    b.ack(got)
