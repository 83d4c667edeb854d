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
        assert body_x(first) == 2, (
            f"native_delay: the message with eta = now + 2s was fetched first, "
            f"{m.eta - time.time():.2f}s before its eta (expected the undelayed message published with it); "
            f"a kind that declares native_delay must hold a message until OutgoingMessage.eta")
        early = broker.fetch(1, 0.5)
        assert early == [] or time.time() >= m.eta - 0.05, (
            f"native_delay: fetch() returned {[body_x(d) for d in early]} {m.eta - time.time():.2f}s before the "
            f"delayed message's eta (only the delayed message was left)")
        try:
            [later] = fetch_until(broker, 1, timeout=10, lost_after=None)
        except AssertionError as exc:
            raise AssertionError(f"native_delay: the message with eta = now + 2s never came: {exc}") from exc
        assert time.time() >= m.eta - 0.05, (f"native_delay: the delayed message was fetched "
                                             f"{m.eta - time.time():.2f}s before its eta")
        assert body_x(later) == 1, f"native_delay: expected the delayed message (x=1), got x={body_x(later)}"
        broker.ack([first, later])


class TestDelay(DelayTests, ContractBase):
    pass
