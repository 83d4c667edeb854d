"""Priority: waiting messages come out highest priority first, with the kind's default configuration."""
from __future__ import annotations

from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires("priority", broadcast=False)
class PriorityTests:
    def test_priority(self, broker, message, settings):
        msgs = []
        for prio in [1, 5, 3, 0, 9]:
            m = message(prio)
            m.priority = prio
            msgs.append(m)
        broker.publish(msgs)  # everything waits before the first fetch
        got = fetch_until(broker, 5, timeout=settings["consumer_ready_timeout"] + 10)
        order = [body_x(d) for d in got]
        assert order == [9, 5, 3, 1, 0], (
            f"priority: messages published with priorities [1, 5, 3, 0, 9] (all waiting before the first "
            f"fetch) came out in the order {order}, expected highest priority first [9, 5, 3, 1, 0]; a kind "
            f"that declares priority=True must order by OutgoingMessage.priority with its default configuration")
        broker.ack(got)


class TestPriority(PriorityTests, ContractBase):
    pass
