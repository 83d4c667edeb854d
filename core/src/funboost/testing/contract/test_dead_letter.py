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
        try:
            [dd] = fetch_until(dlx, 1, timeout=settings["consumer_ready_timeout"] + 10)
        except AssertionError as exc:
            raise AssertionError(f"dead_letter: a rejected message did not reach {queue_name}_dlx: {exc}") from exc
        obj = json.loads(body_text(dd))
        assert obj.get("x") == 7, f"dead_letter: the message in {queue_name}_dlx is not the rejected one: {obj}"
        reason = obj.get("extra", {}).get("dead_letter_reason")
        assert reason == "contract test reason", (f"dead_letter: reject(reason=...) must set "
                                                  f"extra.dead_letter_reason; got {reason!r} in {obj}")
        dlx.ack([dd])
        back = broker.fetch(1, 0.3)
        assert back == [], (f"dead_letter: the rejected message is still delivered on the original queue: "
                            f"{[body_text(x) for x in back]}")


class TestDeadLetter(DeadLetterTests, ContractBase):
    pass
