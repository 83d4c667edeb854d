"""Native delay: the broker holds a message until its ``eta``."""
from __future__ import annotations

import time

from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires("native_delay", broadcast=False)
class DelayTests:
    def test_native_delay(self, broker, message, settings):
        m = message(1)
        m.eta = time.time() + 2.0
        broker.publish([m, message(2)])
        [first] = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10)
        assert body_x(first) == 2
        assert broker.fetch(1, 0.5) == [] or time.time() >= m.eta - 0.05
        [later] = fetch_until(broker, 1, timeout=10, lost_after=None)
        assert time.time() >= m.eta - 0.05, "a delayed message came before its eta"
        assert body_x(later) == 1
        broker.ack([first, later])


class TestDelay(DelayTests, ContractBase):
    pass
