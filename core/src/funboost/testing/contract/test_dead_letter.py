"""Reject: the message moves to ``<queue>_dlx`` with the reason."""
from __future__ import annotations

import json

from funboost.testing.contract.base import ContractBase, body_text, fetch_until
from funboost.testing.requirements import requires


@requires("dead_letter", broadcast=False)
class DeadLetterTests:
    def test_reject_goes_to_dead_letter_queue(self, broker, make_broker, queue_name, message, settings):
        dlx = make_broker(f"{queue_name}_dlx")
        dlx.fetch(1, 0.05)  # consumer-group brokers: join before messages arrive
        broker.publish([message(7)])
        [d] = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10)
        broker.reject([d], "contract test reason")
        [dd] = fetch_until(dlx, 1, timeout=settings["consumer_ready_timeout"] + 10)
        obj = json.loads(body_text(dd))
        assert obj["x"] == 7
        assert obj["extra"]["dead_letter_reason"] == "contract test reason"
        dlx.ack([dd])
        assert broker.fetch(1, 0.3) == []


class TestDeadLetter(DeadLetterTests, ContractBase):
    pass
