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
        try:
            [d2] = fetch_until(broker, 1, timeout=settings["requeue_timeout"] + settings["consumer_ready_timeout"])
        except AssertionError as exc:
            raise AssertionError(f"requeue: a requeued delivery did not come back: {exc}") from exc
        assert body_text(d2) == body_text(d), (f"requeue: the requeued message came back changed: "
                                               f"{body_text(d)} -> {body_text(d2)}")
        broker.ack([d2])
        again = broker.fetch(1, 0.3)
        assert again == [], (f"requeue/ack: the message requeued once and then acked was delivered again: "
                             f"{[body_text(x) for x in again]}")

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
                       message="queue_size().in_flight == 0 after requeue() (native_requeue: the broker takes "
                               "the delivery back at once)")
        if caps.queue_size == "exact":
            wait_until(lambda: broker.queue_size().ready == 1, settings["requeue_timeout"],
                       message="queue_size().ready == 1 after requeue() (native_requeue: the message is ready "
                               "again at once)")
        try:
            [d2] = fetch_until(broker, 1, timeout=settings["requeue_timeout"])
        except AssertionError as exc:
            raise AssertionError(f"native_requeue: the requeued message was not fetchable again within "
                                 f"requeue_timeout={settings['requeue_timeout']:g}s: {exc}") from exc
        assert body_text(d2) == body_text(d), (f"requeue: the requeued message came back changed: "
                                               f"{body_text(d)} -> {body_text(d2)}")
        broker.ack([d2])


class TestRequeue(RequeueTests, ContractBase):
    pass
