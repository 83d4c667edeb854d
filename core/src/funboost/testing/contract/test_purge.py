"""Purge drops every ready message."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, expect_ready
from funboost.testing.requirements import requires


@requires("purge", broadcast=False)
class PurgeTests:
    def test_purge(self, broker, message):
        broker.fetch(1, 0.05)
        broker.publish([message(i) for i in range(5)])
        expect_ready(broker, 5)
        n = broker.purge()
        assert n == -1 or n >= 5
        assert broker.fetch(10, 0.5) == []


class TestPurge(PurgeTests, ContractBase):
    pass
