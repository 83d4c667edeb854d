"""Requeue: a requeued delivery comes back; with ``native_requeue`` it is released at once."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, body_text, fetch_until, wait_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class RequeueTests:
    def test_requeue(self, broker, message, settings):
        broker.publish([message(1)])
        [d] = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10)
        broker.requeue([d])
        [d2] = fetch_until(broker, 1, timeout=settings["requeue_timeout"] + settings["consumer_ready_timeout"])
        assert body_text(d2) == body_text(d)
        broker.ack([d2])
        assert broker.fetch(1, 0.3) == []

    @requires("native_requeue")
    def test_native_requeue_releases_the_delivery_at_once(self, broker, message, settings):
        """``native_requeue`` means the broker takes the delivery back itself (the engine then requeues
        what it holds when it stops): no lease or timeout has to expire first."""
        broker.publish([message(1)])
        [d] = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10)
        broker.requeue([d])
        caps = broker.capabilities
        if caps.in_flight_count:
            wait_until(lambda: broker.queue_size().in_flight == 0, settings["requeue_timeout"],
                       message="in_flight == 0 after requeue")
        if caps.queue_size == "exact":
            wait_until(lambda: broker.queue_size().ready == 1, settings["requeue_timeout"],
                       message="ready == 1 after requeue")
        [d2] = fetch_until(broker, 1, timeout=settings["requeue_timeout"])
        assert body_text(d2) == body_text(d)
        broker.ack([d2])


class TestRequeue(RequeueTests, ContractBase):
    pass
