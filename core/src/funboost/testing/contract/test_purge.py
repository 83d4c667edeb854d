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
        assert n == -1 or n >= 5, f"purge() returned {n} with 5 messages ready (the number dropped, or -1 if unknown)"
        left = broker.fetch(10, 0.5)
        assert left == [], f"purge(): {len(left)} of 5 ready messages were still fetched after purge()"


class TestPurge(PurgeTests, ContractBase):
    pass
