"""``rabbitmq_complex_routing`` on the real RabbitMQ: a topic exchange and a fanout exchange feeding several
queues, routing keys per publish (options, TaskOptions.key, the original's other_extra_params), headers per
publish, and publishers that are instance names (their queue is never declared)."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pika
import pytest

from funboost import BoosterParams, TaskOptions, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost_rabbitmq import RabbitmqComplexRoutingBroker, RabbitmqComplexRoutingOptions
from funboost_rabbitmq.connection import get_admin

from conftest import broker_factory, wait_until


def _msg(x, **kw) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"x": x}), task_id=f"t{x}-{uuid.uuid4().hex[:6]}", **kw)


def _xs(deliveries) -> list:
    return sorted(json.loads(d.body)["x"] for d in deliveries)


def _drain(brokers, expected: int, timeout: float = 15.0) -> list:
    """Fetch from every broker until ``expected`` messages arrived in total (acking them)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for b in brokers:
            batch = b.fetch(50, 0.2)
            b.ack(batch)
            got.extend(batch)
    return got


@pytest.fixture
def routing(rabbitmq_url):
    """Builds complex-routing brokers; deletes their queues and the test's exchanges afterwards."""
    exchanges: list[str] = []
    tag = uuid.uuid4().hex[:10]
    with broker_factory(rabbitmq_url, RabbitmqComplexRoutingBroker, RabbitmqComplexRoutingOptions,
                        f"_{tag}") as make_broker:

        def make(queue: str, **options) -> RabbitmqComplexRoutingBroker:
            if options.get("exchange_name") and options["exchange_name"] not in exchanges:
                exchanges.append(options["exchange_name"])
            return make_broker(queue, **options)

        make.tag = tag  # type: ignore[attr-defined]
        yield make
    admin = get_admin(rabbitmq_url, 30)
    for ex in exchanges:
        try:
            admin.run(lambda ch, ex=ex: ch.exchange_delete(ex))
        except Exception:
            pass


def _started(*brokers) -> None:
    """Consumers declare and bind their queues when they start consuming."""
    for b in brokers:
        b.fetch(1, 0)
    wait_until(lambda: all(b._subscription is not None and b._subscription.connected.is_set() for b in brokers),
               10, message="consumers bound")


def _queue_exists(url: str, name: str) -> bool:
    try:
        get_admin(url, 30).run(lambda ch: ch.queue_declare(name, passive=True), retries=0)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False


def test_the_kind_resolves_by_the_originals_name():
    assert resolve_broker_kind("RABBITMQ_COMPLEX_ROUTING") is RabbitmqComplexRoutingBroker


def test_topic_exchange_routes_by_the_key_of_each_publish(routing, rabbitmq_url):
    ex = f"fbtest_topic_{routing.tag}"
    errors = routing("errors", exchange_name=ex, exchange_type="topic", routing_key_for_bind="log.*.error")
    everything = routing("all_logs", exchange_name=ex, exchange_type="topic", routing_key_for_bind=["log.#"])
    exact = routing("exact", exchange_name=ex, exchange_type="topic")  # default binding: its own queue name
    _started(errors, everything, exact)
    publisher = routing("publisher_instance", exchange_name=ex, exchange_type="topic",
                        routing_key_for_publish="log.app.info")  # the options' key: the default per publish
    publisher.publish([_msg(1), _msg(2, key="log.db.error"), _msg(3, key="log.app.error"),
                       _msg(4, key="other.app.error"), _msg(5, key=exact.queue_name)])
    assert _xs(_drain([errors], 2)) == [2, 3]
    assert _xs(_drain([everything], 3)) == [1, 2, 3]
    assert _xs(_drain([exact], 1)) == [5]
    for b in (errors, everything, exact):
        assert b.fetch(5, 0.3) == []  # nothing more: message 4 matched no binding
    assert not _queue_exists(rabbitmq_url, publisher.queue_name)  # an instance name, not a queue


def test_fanout_exchange_gives_every_bound_queue_one_copy_shared_by_its_consumers(routing):
    ex = f"fbtest_fanout_{routing.tag}"
    email = [routing("email", exchange_name=ex, exchange_type="fanout") for _ in range(2)]
    sms = [routing("sms", exchange_name=ex, exchange_type="fanout", routing_key_for_bind="ignored")]
    _started(*email, *sms)
    routing("notify", exchange_name=ex, exchange_type="fanout").publish(
        [_msg(i, key="any key is ignored") for i in range(20)])
    got_email = _drain(email, 20)
    got_sms = _drain(sms, 20)
    assert _xs(got_email) == list(range(20))  # each message once in the queue, whichever consumer took it
    assert _xs(got_sms) == list(range(20))
    for b in (*email, *sms):
        assert b.fetch(5, 0.3) == []
    assert email[0].queue_name == email[1].queue_name and email[0].queue_size().ready == 0


def test_boosters_with_the_originals_per_publish_routing(routing, rabbitmq_url):
    """End to end with boosters: consumers on a topic exchange and a headers exchange; a cross-project
    publisher sets the routing key and headers of each message the original's way."""
    tag = routing.tag
    topic, headers_ex = f"fbtest_btopic_{tag}", f"fbtest_bhead_{tag}"
    seen: dict[str, list] = {"orders": [], "red": []}
    lock = threading.Lock()

    def params(queue: str, **cfg) -> BoosterParams:
        return BoosterParams(queue_name=f"{queue}_{tag}", broker_kind="RABBITMQ_COMPLEX_ROUTING",
                             state_backend="memory", log_to_console=False,
                             broker_exclusive_config={"url": rabbitmq_url, **cfg})

    @boost(params("orders", exchange_name=topic, exchange_type="topic", routing_key_for_bind="order.*"))
    def orders(n):
        with lock:
            seen["orders"].append(n)

    @boost(params("red", exchange_name=headers_ex, exchange_type="headers", headers_for_bind={"color": "red"}))
    def red(n):
        with lock:
            seen["red"].append(n)

    try:
        orders.consume()
        red.consume()
        for b in (orders, red):
            wait_until(lambda b=b: b.consumer is not None and b.consumer.broker._subscription is not None
                       and b.consumer.broker._subscription.connected.is_set(), 15, message="bound")
        from funboost import BoostersManager
        pub = BoostersManager.get_cross_project_publisher(params("topic_pub", exchange_name=topic, exchange_type="topic"))
        pub.publish({"n": 1}, task_options=TaskOptions(other_extra_params={"routing_key_for_publish": "order.new"}))
        pub.publish({"n": 2}, task_options=TaskOptions(other_extra_params={"routing_key_for_publish": "user.new"}))
        pub.publish({"n": 3}, task_options=TaskOptions(key="order.paid"))
        hpub = BoostersManager.get_cross_project_publisher(
            params("head_pub", exchange_name=headers_ex, exchange_type="headers"))
        hpub.publish({"n": 10}, task_options=TaskOptions(other_extra_params={"headers_for_publish": {"color": "red"}}))
        hpub.publish({"n": 11}, task_options=TaskOptions(other_extra_params={"headers_for_publish": {"color": "blue"}}))
        wait_until(lambda: sorted(seen["orders"]) == [1, 3] and seen["red"] == [10], 20, message="routed runs")
        assert orders.get_message_count() == 0 and red.get_message_count() == 0
        for b in (pub, hpub):
            assert not _queue_exists(rabbitmq_url, b.queue_name)
    finally:
        for b in (orders, red):
            b.stop_consume(5)
            try:
                b.broker.delete_queues()
            except Exception:
                pass
        admin = get_admin(rabbitmq_url, 30)
        for ex in (topic, headers_ex):
            admin.run(lambda ch, ex=ex: ch.exchange_delete(ex))
