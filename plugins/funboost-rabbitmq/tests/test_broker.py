"""Broker-level tests of the rabbitmq kind against a real server."""
from __future__ import annotations

import json
import threading
import time

import pytest
from pydantic import ValidationError

from funboost.plugins.broker import OutgoingMessage
from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions
from funboost_rabbitmq.broker import delay_bucket_ms

from conftest import run_in_threads, wait_until


def msgs(*values, **kw) -> list[OutgoingMessage]:
    return [OutgoingMessage(body=json.dumps({"x": v}), task_id=f"t{v}", **kw) for v in values]


def xs(deliveries) -> list:
    return [json.loads(d.body)["x"] for d in deliveries]


def fetch_n(broker: RabbitmqBroker, n: int, timeout: float = 10.0, batch: int = 100) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(broker.fetch(min(batch, n - len(out)), 0.5))
    return out


# ---------------------------------------------------------------- options
def test_options_accept_original_funboost_keys():
    o = RabbitmqOptions(**{"x-max-priority": 5, "queue_durable": True, "no_ack": False,
                           "exchange_name": "ex", "exchange_type": "topic", "routing_key_for_bind": "a.#",
                           "exchange_declare_durable": True})
    assert o.max_priority == 5 and o.exchange_type == "topic" and o.bind_keys("q") == ["a.#"]
    with pytest.raises(ValidationError):
        RabbitmqOptions(prefetch=3)  # typo: unknown keys are errors
    with pytest.raises(ValidationError):
        RabbitmqOptions(url="redis://localhost")


def test_url_from_env(monkeypatch):
    monkeypatch.setenv("FUNBOOST_RABBITMQ_URL", "amqp://u:p@10.0.0.1:5672/v")
    assert RabbitmqOptions().resolved_url() == "amqp://u:p@10.0.0.1:5672/v"
    assert RabbitmqOptions(url="amqps://h/%2F").resolved_url() == "amqps://h/%2F"


def test_check_available_reports_a_reason_for_a_dead_port():
    reason = RabbitmqBroker.check_available(RabbitmqOptions(url="amqp://guest:guest@127.0.0.1:1/%2F"))
    assert reason and "not reachable" in reason and "guest:***" in reason


def test_delay_buckets_never_early_and_few():
    for ms in (1, 9, 10, 999, 1000, 1001, 1500, 65_000, 3_600_000):
        b = delay_bucket_ms(ms)
        assert b >= ms and b <= max(ms * 1.02, ms + 10)
    assert len({delay_bucket_ms(ms) for ms in range(1000, 60_000)}) < 64 * 6


# ---------------------------------------------------------------- data path
def test_publish_fetch_ack_and_sizes(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(*range(5)))
    assert b.queue_size().ready == 5  # confirmed publishes are counted at once
    got = fetch_n(b, 5)
    assert xs(got) == [0, 1, 2, 3, 4]
    size = b.queue_size()
    assert size.ready == 0 and size.in_flight == 5
    b.ack(got[:3])
    wait_until(lambda: b.queue_size().in_flight == 2, 5, message="in_flight 2")
    b.ack(got[3:])
    wait_until(lambda: b.queue_size().in_flight == 0, 5, message="in_flight 0")
    assert b.fetch(10, 0.3) == []


def test_acks_out_of_order_and_twice(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(*range(20)))
    got = fetch_n(b, 20)
    # out of order, a duplicate ack, from several threads: the channel must survive all of it
    threads = [threading.Thread(target=b.ack, args=(got[i::3],)) for i in (2, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.ack(got[:5])
    wait_until(lambda: b.queue_size().in_flight == 0, 5, message="all acked")
    gen = b._subscription.generation
    b.publish(msgs(99))
    assert xs(fetch_n(b, 1)) == [99]
    assert b._subscription.generation == gen  # no reconnect: no ack was refused


def test_requeue_redelivers(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(1, 2))
    got = fetch_n(b, 2)
    b.ack(got[:1])
    b.requeue(got[1:])
    again = fetch_n(b, 1)
    assert xs(again) == [2] and again[0].redelivered
    b.ack(again)


def test_unacked_come_back_when_the_consumer_closes(make_broker, queue_name):
    a = make_broker(queue_name)
    a.publish(msgs(*range(3)))
    assert len(fetch_n(a, 3)) == 3
    a.close()  # never acked
    b = make_broker(queue_name)
    got = fetch_n(b, 3)
    assert sorted(xs(got)) == [0, 1, 2] and all(d.redelivered for d in got)
    b.ack(got)


def test_reject_goes_through_the_dead_letter_exchange(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(7, 8))
    got = fetch_n(b, 2)
    b.reject(got[:1], "bad input")
    b.ack(got[1:])
    dlx = b.dead_letter_broker()
    dead = fetch_n(dlx, 1)
    body = json.loads(dead[0].body)
    assert body["x"] == 7 and body["extra"]["dead_letter_reason"] == "bad input"
    dlx.ack(dead)
    wait_until(lambda: b.queue_size().in_flight == 0, 5, message="original acked")
    assert b.queue_size().ready == 0


def test_broker_dead_letters_land_in_the_dlx_queue(make_broker, queue_name):
    """RabbitMQ's own dead-lettering (here: a queue TTL) goes to the same <queue>_dlx."""
    b = make_broker(queue_name, queue_arguments={"x-message-ttl": 50})
    b.publish(msgs(5))
    dead = fetch_n(b.dead_letter_broker(), 1, timeout=10)
    assert xs(dead) == [5]


def test_purge(make_broker, queue_name):
    b = make_broker(queue_name)
    assert b.purge() == 0  # a queue that does not exist yet is empty
    b.publish(msgs(*range(4)))
    assert b.purge() == 4
    assert b.queue_size().ready == 0


def test_batch_publish_of_many(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(*range(2000)))
    assert b.queue_size().ready == 2000
    assert b.purge() == 2000


def test_concurrent_publishers_share_one_connection(make_broker, queue_name):
    b = make_broker(queue_name)

    def work(k: int) -> None:
        for i in range(25):
            b.publish(msgs(k * 100 + i))

    run_in_threads(work, 8)
    assert b.queue_size().ready == 200


def test_priority_order(make_broker, queue_name):
    b = make_broker(queue_name, max_priority=10, prefetch_count=1)
    prios = [1, 5, 0, 9, 5, 3]
    b.publish([OutgoingMessage(body=json.dumps({"x": i}), priority=p) for i, p in enumerate(prios)])
    order = []
    for _ in prios:
        d = fetch_n(b, 1, batch=1)
        order.append(prios[xs(d)[0]])
        b.ack(d)
    assert order == sorted(prios, reverse=True)


def test_native_delay(make_broker, queue_name):
    b = make_broker(queue_name)
    t0 = time.time()
    b.publish(msgs(1, eta=t0 + 1.5))
    b.publish(msgs(2))
    assert xs(fetch_n(b, 1)) == [2]
    assert b.queue_size().ready == 0  # a delayed message is not ready
    got = fetch_n(b, 1, timeout=10)
    assert xs(got) == [1] and time.time() >= t0 + 1.5 - 0.01
    assert time.time() < t0 + 4.5
    b.ack(got)


def test_a_long_delay_does_not_hold_back_a_shorter_one(make_broker, queue_name):
    b = make_broker(queue_name)
    t0 = time.time()
    b.publish(msgs(1, eta=t0 + 30) + msgs(2, eta=t0 + 0.5))
    got = fetch_n(b, 1, timeout=10)
    assert xs(got) == [2] and time.time() < t0 + 5


def test_fanout_reaches_every_consumer(make_broker, queue_name):
    exchange = f"{queue_name}_fan"
    consumers = [make_broker(queue_name, exchange_type="fanout", exchange_name=exchange) for _ in range(3)]
    for c in consumers:
        c.fetch(1, 0)  # starts consuming: a broadcast reaches the consumers alive when it is sent
    wait_until(lambda: all(c._subscription.connected.is_set() for c in consumers), 10, message="bound")
    pub = make_broker(queue_name, exchange_type="fanout", exchange_name=exchange)
    pub.publish(msgs(*range(10)))
    for c in consumers:
        got = fetch_n(c, 10)
        assert sorted(xs(got)) == list(range(10))
        c.ack(got)
        assert c.queue_size().ready == 0


def test_topic_routing(make_broker, queue_name):
    ex = f"{queue_name}_topic"
    b = make_broker(queue_name, exchange_type="topic", exchange_name=ex, routing_key_for_bind="a.*")
    b.publish(msgs(1, key="a.x") + msgs(2, key="b.x") + msgs(3, key="a.y"))
    got = fetch_n(b, 2)
    assert sorted(xs(got)) == [1, 3]
    assert b.fetch(5, 0.3) == []


def test_direct_exchange_with_publish_key(make_broker, queue_name):
    ex = f"{queue_name}_direct"
    b = make_broker(queue_name, exchange_name=ex, routing_key_for_bind=["k1", "k2"],
                    routing_key_for_publish="k2")
    b.publish(msgs(1) + msgs(2, key="k1") + msgs(3, key="zz"))
    got = fetch_n(b, 2)
    assert sorted(xs(got)) == [1, 2]
    assert b.fetch(5, 0.3) == []


def test_headers_routing(make_broker, queue_name):
    ex = f"{queue_name}_headers"
    b = make_broker(queue_name, exchange_type="headers", exchange_name=ex,
                    headers_for_bind={"color": "red", "size": "l"}, x_match_for_bind="any")
    b.publish(msgs(1, headers={"color": "red"}) + msgs(2, headers={"color": "blue"})
              + msgs(3, headers={"size": "l"}))
    got = fetch_n(b, 2)
    assert sorted(xs(got)) == [1, 3]
    assert b.fetch(5, 0.3) == []


def test_prefetch_is_bounded(make_broker, queue_name):
    b = make_broker(queue_name)
    b.publish(msgs(*range(50)))
    assert len(b.fetch(3, 5)) >= 1  # the engine has room for 3: prefetch follows (2 x 3)
    time.sleep(0.3)  # let the server push what the prefetch allows (a bound, not a correctness wait)
    assert b.queue_size().in_flight <= 6
    assert b.queue_size().ready >= 44


def test_no_ack_mode(make_broker, queue_name):
    b = make_broker(queue_name, no_ack=True)
    b.publish(msgs(1, 2))
    got = fetch_n(b, 2)
    b.requeue(got[1:])  # auto-acked already: requeue publishes a copy
    assert xs(fetch_n(b, 1)) == [2]
