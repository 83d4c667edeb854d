"""``queue_size``: exact or approximate counts as declared; ``none`` is ``ready=None``, never a fake 0."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, expect_ready, fetch_until, wait_until
from funboost.testing.requirements import requires


class QueueSizeTests:
    @requires(queue_size="none")
    def test_unknown_size_is_none(self, broker):
        size = broker.queue_size()
        assert size.ready is None, (f"queue_size='none': queue_size() must report ready=None (unknown), never a "
                                    f"number; got {size}")

    @requires(queue_size=("exact", "approximate"), broadcast=False)
    def test_queue_size(self, broker, message, settings):
        caps = broker.capabilities
        broker.publish([message(i) for i in range(5)])
        expect_ready(broker, 5)
        got = fetch_until(broker, 2, timeout=settings["consumer_ready_timeout"] + 10, max_batch=2)
        if caps.in_flight_count:
            size = broker.queue_size()
            assert size.in_flight is not None and size.in_flight >= 2, (
                f"in_flight_count: with 2 of 5 messages fetched and not acked, queue_size() reports {size} "
                f"(in_flight >= 2 expected)")
            if caps.queue_size == "exact":
                assert size.ready == 3 and size.in_flight == 2, (
                    f"queue_size='exact' and in_flight_count: with 2 of 5 messages fetched and not acked, "
                    f"queue_size() reports {size} (ready=3, in_flight=2 expected)")
        broker.ack(got)
        rest = fetch_until(broker, 3, timeout=10)
        broker.ack(rest)
        wait_until(lambda: broker.queue_size().ready == 0, 15,
                   message="queue_size().ready == 0 after every message was fetched and acked")


class TestQueueSize(QueueSizeTests, ContractBase):
    pass
