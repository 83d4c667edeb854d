"""funboost.foreign.poll: the pull loop of framework-as-broker plugins (poll until a deadline, sleep
no longer than the next held message needs) and the due-ordered hold. A manual clock makes the loop's
decisions exact; nothing here waits on real time."""
from __future__ import annotations

import time

from funboost.foreign import HeldMessages, poll_until
from funboost.foreign.poll import POLL_INTERVAL


class ManualClock:
    """``clock`` / ``sleep`` for poll_until: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_held_messages_come_out_in_due_order_and_only_when_due():
    held: HeldMessages[str] = HeldMessages()
    assert len(held) == 0 and held.next_due() is None and held.pop_due() == []
    held.hold(30.0, "c")
    held.hold(10.0, "a")
    held.hold(20.0, "b1")
    held.hold(20.0, "b2")  # same due time: arrival order
    assert len(held) == 4 and held.next_due() == 10.0
    assert held.pop_due(now=5.0) == []
    assert held.pop_due(now=20.0, limit=2) == ["a", "b1"]
    assert held.pop_due(now=20.0) == ["b2"]
    assert held.next_due() == 30.0
    assert held.clear() == ["c"] and len(held) == 0


def test_held_items_need_not_be_comparable():
    held: HeldMessages[object] = HeldMessages()
    a, b = object(), object()
    held.hold(1.0, a)
    held.hold(1.0, b)  # a heap of (due, item) would compare the objects and raise TypeError
    assert held.pop_due(now=2.0) == [a, b]


def test_poll_until_returns_the_first_non_empty_pull():
    c = ManualClock()
    results = [[], [], ["x"], ["never"]]
    calls = []

    def pull():
        calls.append(c.now)
        return results[len(calls) - 1]

    assert poll_until(pull, 5.0, sleep=c.sleep, clock=c.clock) == ["x"]
    assert len(calls) == 3
    assert c.sleeps == [POLL_INTERVAL, POLL_INTERVAL]


def test_poll_until_pulls_once_with_zero_timeout_and_never_sleeps_past_the_deadline():
    c = ManualClock()
    calls = []
    assert poll_until(lambda: calls.append(1) or [], 0, sleep=c.sleep, clock=c.clock) == []
    assert calls == [1] and c.sleeps == []

    c2 = ManualClock()
    calls.clear()
    assert poll_until(lambda: calls.append(1) or [], 0.625, interval=0.25, sleep=c2.sleep, clock=c2.clock) == []
    assert c2.sleeps == [0.25, 0.25, 0.125]  # the last step ends at the deadline
    assert len(calls) == 4  # one last pull at the deadline


def test_poll_until_wakes_for_a_held_message_falling_due():
    c = ManualClock()
    held: HeldMessages[str] = HeldMessages()
    held.hold(time.time() - 1, "overdue")  # due already: no sleep at all before the next pull
    pulls = []

    def pull():
        pulls.append(1)
        return held.pop_due() if len(pulls) > 1 else []

    assert poll_until(pull, 5.0, held=held, interval=10.0, sleep=c.sleep, clock=c.clock) == ["overdue"]
    assert c.sleeps == [0.0]

    c2 = ManualClock()
    held.hold(time.time() + 3600, "later")  # due long after the interval: the interval rules
    assert poll_until(lambda: [], 1.0, held=held, interval=0.25, sleep=c2.sleep, clock=c2.clock) == []
    assert c2.sleeps == [0.25, 0.25, 0.25, 0.25]  # (exact binary fractions)
