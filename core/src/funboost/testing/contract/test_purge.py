"""Purge drops every ready message."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, wait_until
from funboost.testing.requirements import requires


@requires("purge", broadcast=False)
class PurgeTests:
    def test_purge(self, broker, message):
        broker.fetch(1, 0.05)
        broker.publish([message(i) for i in range(5)])
        if broker.capabilities.queue_size != "none":
            wait_until(lambda: (broker.queue_size().ready or 0) >= 5, 15, message="5 ready")
        n = broker.purge()
        assert n == -1 or n >= 5
        assert broker.fetch(10, 0.5) == []


class TestPurge(PurgeTests, ContractBase):
    pass
