"""Ack is final: an acked message is released by the broker and never delivered again."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, fetch_until, wait_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class AckTests:
    @requires("in_flight_count")
    def test_ack_releases_in_flight(self, broker, message, settings):
        broker.publish([message(i) for i in range(3)])
        got = fetch_until(broker, 3, timeout=settings["consumer_ready_timeout"] + 10)
        wait_until(lambda: broker.queue_size().in_flight == 3, 10,
                   message="queue_size().in_flight == 3 with 3 messages fetched and not acked (in_flight_count)")
        broker.ack(got)
        wait_until(lambda: broker.queue_size().in_flight == 0, 10,
                   message="queue_size().in_flight == 0 after ack() of the 3 fetched messages (in_flight_count: "
                           "ack must release them)")

    def test_acked_messages_do_not_come_back_after_close(self, broker, make_broker, message, settings):
        """Closing a consumer hands back what it did not ack (at-least-once kinds); acked messages stay
        done: a new consumer gets none of them. (Within this window a lease-based kind may not have
        reclaimed anything yet; ``test_redelivery`` checks what comes back after a killed consumer's
        messages were reclaimed.)"""
        broker.publish([message(i) for i in range(4)])
        got = fetch_until(broker, 4, timeout=settings["consumer_ready_timeout"] + 10, max_batch=4)
        done = [d for d in got if d is not got[-1]]
        broker.ack(done)
        broker.requeue([got[-1]])
        left_x = fetch_until(broker, 1, timeout=settings["requeue_timeout"] + settings["consumer_ready_timeout"])
        broker.ack(left_x)
        broker.close()
        fresh = make_broker()
        extra = fresh.fetch(10, 2.0)
        assert extra == [], (f"ack: messages acked (then the consumer closed) were delivered again to a new "
                             f"consumer: {[d.body for d in extra]}")


class TestAck(AckTests, ContractBase):
    pass
