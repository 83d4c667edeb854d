"""Crash safety: a SIGKILLed consumer's unacked messages come back, and only those (``at_least_once``); a
living consumer's long task is never handed to another consumer (every work queue: liveness, not a fixed
visibility timeout).

Both use ``fast_reclaim_options`` (``--funboost-reclaim-option KEY=VALUE``) so that a dead consumer is
noticed quickly.
"""
from __future__ import annotations

import json
import time

from funboost.testing.contract._child import run_child
from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class RedeliveryTests:
    @requires("at_least_once", "cross_process")
    def test_killed_consumers_unacked_messages_come_back_and_acked_ones_do_not(
            self, broker_cls, reclaim_options_raw, queue_name, make_broker, kind, message, settings):
        """A consumer process fetches 4 of 10 messages, acks 2 of them, keeps running for a moment as the
        engine's consumer does (a kind that sends its acks with the next poll has sent them by then), and
        is killed with SIGKILL. Its 2 unacked messages must come back to another consumer, with the 6 it
        never fetched; the 2 it acked must not, even once the dead consumer's messages were reclaimed
        (an ack that does nothing is only visible after the reclaim)."""
        opts = reclaim_options_raw
        pub = make_broker(opts=broker_cls.parse_options(opts))
        pub.publish([message(i) for i in range(10)])
        proc = run_child(kind, queue_name, opts, """
            from funboost.testing.contract.base import body_x
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 4 and time.monotonic() < deadline:
                got += b.fetch(4 - len(got), 1.0)
            acked, kept = got[:2], got[2:]
            b.ack(acked)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:  # a consumer keeps polling after an ack (keep-alive polls when busy)
                if cls.poll_while_busy:
                    b.fetch(0, 0.0)
                time.sleep(0.1)
            print(json.dumps({"acked": [body_x(d) for d in acked], "kept": [body_x(d) for d in kept]}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """, serve=broker_cls.capabilities.needs_serving_consumer)
        assert proc.returncode == -9, f"the consumer child did not get as far as its SIGKILL: {proc.stderr}"
        lines = proc.stdout.strip().splitlines()
        assert lines, f"the consumer child fetched nothing: {proc.stdout}{proc.stderr}"
        child = json.loads(lines[-1])
        assert len(child["acked"]) + len(child["kept"]) == 4, \
            f"the consumer child fetched {child} instead of 4 messages within 60s: {proc.stderr}"
        acked, kept = set(child["acked"]), set(child["kept"])
        expected = set(range(10)) - acked
        survivor = make_broker(opts=broker_cls.parse_options(opts))
        timeout = settings["redelivery_timeout"] + settings["consumer_ready_timeout"]
        try:  # the killed consumer's messages are in flight until reclaimed
            got = fetch_until(survivor, len(expected), timeout=timeout, lost_after=None)
        except AssertionError as exc:
            raise AssertionError(
                f"at_least_once: after a consumer holding messages {sorted(kept)} unacked was killed (SIGKILL), "
                f"another consumer did not get all of {sorted(expected)} back: {exc}") from exc
        # the reclaim happened (the killed consumer's unacked messages are back): anything acked that the
        # same reclaim released shows now
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            more = survivor.fetch(10, min(0.5, max(0.0, end - time.monotonic())))
            got += more
        survivor.ack(got)
        xs = sorted(body_x(d) for d in got)
        came_back = sorted(x for x in xs if x in acked)
        assert not came_back, (
            f"at_least_once: messages {came_back} were acked by a consumer that was then killed, and came back "
            f"when its messages were reclaimed: ack() did not settle them (got {xs}; acked {sorted(acked)}, "
            f"unacked {sorted(kept)})")
        twice = sorted({x for x in xs if xs.count(x) > 1})
        assert not twice, f"at_least_once: messages {twice} came back more than once after the reclaim (got {xs})"
        assert set(xs) == expected, (f"at_least_once: expected {sorted(expected)} back after the consumer was "
                                     f"killed, got {xs}")

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
        assert held, (f"no consumer received the message within {settings['consumer_ready_timeout'] + 30:g}s "
                      f"(two consumers fetching alternately)")
        end = time.monotonic() + settings["long_task_seconds"]
        while time.monotonic() < end:
            stolen = b.fetch(1, min(1.0, max(0.0, end - time.monotonic())))
            assert stolen == [], (f"a living consumer's task was handed to another consumer after "
                                  f"{settings['long_task_seconds'] - (end - time.monotonic()):.1f}s")
        a.ack(held)


class TestRedelivery(RedeliveryTests, ContractBase):
    pass
