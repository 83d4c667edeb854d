"""``queue_size``: exact or approximate counts as declared; ``none`` is ``ready=None``, never a fake 0."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, expect_ready, fetch_until, wait_until
from funboost.testing.requirements import requires


class QueueSizeTests:
    @requires(queue_size="none")
    def test_unknown_size_is_none(self, broker):
        assert broker.queue_size().ready is None

    @requires(queue_size=("exact", "approximate"), broadcast=False)
    def test_queue_size(self, broker, message, settings):
        caps = broker.capabilities
        broker.publish([message(i) for i in range(5)])
        expect_ready(broker, 5)
        got = fetch_until(broker, 2, timeout=settings["consumer_ready_timeout"] + 10, max_batch=2)
        if caps.in_flight_count:
            size = broker.queue_size()
            assert size.in_flight is not None and size.in_flight >= 2
            if caps.queue_size == "exact":
                assert size.ready == 3 and size.in_flight == 2
        broker.ack(got)
        rest = fetch_until(broker, 3, timeout=10)
        broker.ack(rest)
        wait_until(lambda: broker.queue_size().ready == 0, 15, message="ready == 0 after draining")


class TestQueueSize(QueueSizeTests, ContractBase):
    pass
