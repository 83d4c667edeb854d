"""Publish, fetch and ack on a work queue; FIFO order; ``fetch`` honours ``max_count`` and ``timeout``."""
from __future__ import annotations

import json
import threading
import time

from funboost.testing.contract.base import ContractBase, body_text, body_x, fetch_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class PublishConsumeTests:
    def test_publish_fetch_ack(self, broker, message, settings):
        msgs = [message(i) for i in range(20)]
        broker.publish(msgs)
        got = fetch_until(broker, 20, timeout=settings["consumer_ready_timeout"] + 10)
        sent = sorted(json.dumps(json.loads(m.body), sort_keys=True) for m in msgs)
        received = sorted(body_text(d) for d in got)
        assert received == sent, ("publish/fetch: the bodies fetched are not the bodies published (Delivery.body "
                                  f"must be the OutgoingMessage.body envelope, unchanged): "
                                  f"{sorted(set(received) - set(sent))[:3]} not published, "
                                  f"{sorted(set(sent) - set(received))[:3]} not fetched")
        broker.ack(got)
        again = broker.fetch(10, 0.3)
        assert again == [], (f"ack: {len(again)} message(s) were delivered again after all 20 had been fetched and "
                             f"acked: {[body_text(d) for d in again]}")

    @requires(ordering=("fifo", "priority", "partition"))
    def test_fifo_order(self, broker, message, settings):
        msgs = [message(i, key="k") for i in range(10)]
        for m in msgs:
            m.key = "k"  # one partition for partitioned brokers
        broker.publish(msgs)
        got = fetch_until(broker, 10, timeout=settings["consumer_ready_timeout"] + 10)
        order = [body_x(d) for d in got]
        assert order == list(range(10)), (
            f"ordering={broker.capabilities.ordering!r}: 10 messages published in order 0..9 (one key) were "
            f"fetched in the order {order}")
        broker.ack(got)

    def test_fetch_respects_max_count(self, ready_broker, message, settings):
        broker = ready_broker
        broker.publish([message(i) for i in range(6)])
        got = fetch_until(broker, 6, timeout=settings["consumer_ready_timeout"] + 10, max_batch=2)
        broker.ack(got)
        broker.publish([message(i) for i in range(3)])
        one = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10, max_batch=1)
        assert len(one) == 1, f"fetch(max_count=1) returned {len(one)} deliveries"
        rest = fetch_until(broker, 2, timeout=10)
        broker.ack(one + rest)

    def test_fetch_waits_for_its_timeout_on_an_empty_queue(self, ready_broker):
        """An empty fetch blocks up to its timeout (the engine's loop relies on it not to spin)."""
        t0 = time.monotonic()
        got = ready_broker.fetch(5, 1.0)
        assert got == [], f"fetch() on an empty queue returned deliveries nobody published: {[d.body for d in got]}"
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.5, (f"fetch(max_count=5, timeout=1.0) on an empty queue returned after {elapsed:.3f}s: "
                                f"an empty fetch must wait up to its timeout (the engine's loop would spin)")

    def test_fetch_returns_when_a_message_arrives(self, ready_broker, message, settings):
        """A waiting fetch returns as soon as a message arrives, not when its timeout is over."""
        broker = ready_broker
        result: list = []
        started = threading.Event()

        def long_fetch() -> None:
            started.set()
            result.extend(broker.fetch(1, 60.0))
        t = threading.Thread(target=long_fetch, daemon=True)
        t.start()
        started.wait(5)
        broker.publish([message(1)])
        t.join(settings["consumer_ready_timeout"])
        assert not t.is_alive(), (f"fetch(max_count=1, timeout=60) did not return within "
                                  f"{settings['consumer_ready_timeout']:g}s of a message being published: a waiting "
                                  f"fetch must return as soon as a message arrives")
        if not result:  # the message arrived just before the fetch started waiting
            result = fetch_until(broker, 1, timeout=10)
        assert [body_x(d) for d in result] == [1], \
            f"fetch() returned {[body_x(d) for d in result]}, expected the one message published (x=1)"
        broker.ack(result)


class TestPublishConsume(PublishConsumeTests, ContractBase):
    pass
