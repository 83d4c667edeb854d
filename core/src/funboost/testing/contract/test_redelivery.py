"""Crash safety: a SIGKILLed consumer's messages come back (``at_least_once``); a living consumer's long
task is never handed to another consumer (every work queue: liveness, not a fixed visibility timeout).

Both use ``fast_reclaim_options`` (``--funboost-reclaim-option KEY=VALUE``) so that a dead consumer is
noticed quickly.
"""
from __future__ import annotations

import time

from funboost.testing.contract._child import run_child
from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class RedeliveryTests:
    @requires("at_least_once", "cross_process")
    def test_unacked_messages_come_back_after_consumer_is_killed(self, broker_cls, reclaim_options_raw,
                                                                  queue_name, make_broker, kind, message,
                                                                  settings):
        opts = reclaim_options_raw
        pub = make_broker(opts=broker_cls.parse_options(opts))
        pub.publish([message(i) for i in range(10)])
        proc = run_child(kind, queue_name, opts, """
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 4 and time.monotonic() < deadline:
                got += b.fetch(4 - len(got), 1.0)
            print(len(got), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """, serve=broker_cls.capabilities.needs_serving_consumer)
        assert proc.returncode == -9, proc.stderr
        assert proc.stdout.strip() == "4", proc.stdout + proc.stderr
        survivor = make_broker(opts=broker_cls.parse_options(opts))
        got = fetch_until(survivor, 10, timeout=settings["redelivery_timeout"] + settings["consumer_ready_timeout"],
                          lost_after=None)  # the killed consumer's messages are in flight until reclaimed
        assert sorted(body_x(d) for d in got) == list(range(10))
        survivor.ack(got)

    def test_living_consumer_keeps_its_long_task(self, broker_cls, reclaim_options_raw, make_broker, message,
                                                 settings):
        """Consumer A holds a message for ``long_task_seconds`` (longer than the reclaim timeout of
        ``fast_reclaim_options``) while staying alive; consumer B must not get it meanwhile."""
        opts = broker_cls.parse_options(reclaim_options_raw)
        a = make_broker(opts=opts)
        b = make_broker(opts=opts)
        b.fetch(1, 0.05)  # consumer-group kinds: both are members before the message arrives
        a.publish([message(1)])
        held = []
        # two members of one consumer group may rebalance more than once before either gets the message
        deadline = time.monotonic() + settings["consumer_ready_timeout"] + 30
        while not held and time.monotonic() < deadline:
            held = a.fetch(1, 0.5) or []
            if not held:
                taken_by_b = b.fetch(1, 0.5)
                if taken_by_b:  # B got it first: swap roles
                    a, b, held = b, a, taken_by_b
        assert held, "no consumer received the message"
        end = time.monotonic() + settings["long_task_seconds"]
        while time.monotonic() < end:
            stolen = b.fetch(1, min(1.0, max(0.0, end - time.monotonic())))
            assert stolen == [], (f"a living consumer's task was handed to another consumer after "
                                  f"{settings['long_task_seconds'] - (end - time.monotonic()):.1f}s")
        a.ack(held)


class TestRedelivery(RedeliveryTests, ContractBase):
    pass
