"""Work queue vs broadcast: a work queue gives each message to exactly one consumer; a broadcast kind
gives every message to every live consumer."""
from __future__ import annotations

import threading
import time

from funboost.testing.contract.base import ContractBase, body_x, fetch_until, wait_until
from funboost.testing.requirements import requires


class DeliveryModeTests:
    @requires(broadcast=False)
    def test_work_queue_delivers_each_message_once(self, make_broker, message, settings):
        a, b = make_broker(), make_broker()
        a.fetch(1, 0.05)
        b.fetch(1, 0.05)
        a.publish([message(i) for i in range(20)])
        got: dict = {}
        deadline = time.monotonic() + settings["consumer_ready_timeout"] + 20
        while sum(len(v) for v in got.values()) < 20 and time.monotonic() < deadline:
            for name, consumer in (("a", a), ("b", b)):
                batch = consumer.fetch(5, 0.2)
                assert len(batch) <= 5
                got.setdefault(name, []).extend(batch)
                consumer.ack(batch)
            if not any(got.values()) or sum(len(v) for v in got.values()) >= 20:
                continue
            if a.capabilities.queue_size == "exact" and a.queue_size().ready == 0 == b.queue_size().ready:
                break  # nothing left to fetch: whatever is missing was lost (asserted below)
        xs = sorted(body_x(d) for v in got.values() for d in v)
        assert xs == list(range(20)), f"each message once, got {xs}"
        assert a.fetch(5, 0.3) == [] and b.fetch(5, 0.3) == []

    @requires("broadcast")
    def test_broadcast_reaches_every_consumer(self, make_broker, message):
        a, b = make_broker(), make_broker()
        a.fetch(1, 0.2)
        b.fetch(1, 0.2)  # subscribe
        pub = make_broker()
        pub.publish([message(1)])
        assert len(fetch_until(a, 1)) == 1
        assert len(fetch_until(b, 1)) == 1

    @requires("broadcast")
    def test_broadcast_consume_then_push_through_boost(self, broker_cls, options_raw, queue_name, settings):
        """``consume()`` returns once the consumer listens: a broadcast kind keeps nothing for a consumer
        that is not listening yet, so tasks pushed right after ``consume()`` must still reach it (the
        hello-world of a broadcast kind)."""
        from funboost import BoosterParams, boost
        done: list[int] = []
        lock = threading.Lock()

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            with lock:
                done.append(x)

        try:
            work.consume()
            for i in range(3):
                work.push(i)
            wait_until(lambda: len(done) >= 3, settings["consumer_ready_timeout"] + 10,
                       message="3 tasks pushed right after consume() done")
        finally:
            work.stop_consume(10)
        assert sorted(done) == [0, 1, 2]


class TestDeliveryMode(DeliveryModeTests, ContractBase):
    pass
