"""Unit tests of the engine's control primitives: rate limiter, cron window, ack batcher, retry backoff.
Fake clocks where time matters; conditions with deadlines where a thread is involved."""
import datetime as dt
import logging
import threading
import time
import uuid

import pytest

from funboost.brokers.memory import MemoryBroker
from funboost.engine.consumer import AckBatcher
from funboost.engine.controls import CronWindow, RateLimiter, backoff_delay
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import wait_until


class FakeTime:
    """A clock whose sleep advances it: the limiter's schedule is observable without waiting."""

    def __init__(self) -> None:
        self.t = 100.0
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.t += s


def starts(limiter: RateLimiter, ft: FakeTime, n: int) -> list[float]:
    out = []
    for _ in range(n):
        assert limiter.acquire()
        out.append(round(ft.t - 100.0, 6))
    return out


def test_rate_limiter_spaces_starts_evenly():
    ft = FakeTime()
    lim = RateLimiter(4, clock=ft.clock, sleep=ft.sleep)
    assert starts(lim, ft, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_rate_limiter_does_not_accumulate_credit_while_busy_elsewhere():
    ft = FakeTime()
    lim = RateLimiter(10, clock=ft.clock, sleep=ft.sleep)
    starts(lim, ft, 1)
    ft.t += 5.0  # idle for 5 s: with burst=1 only one start is immediate afterwards
    assert starts(lim, ft, 3) == [5.0, 5.1, 5.2]


def test_rate_limiter_burst_after_idle():
    ft = FakeTime()
    lim = RateLimiter(10, burst=3, clock=ft.clock, sleep=ft.sleep)
    ft.t += 10.0
    got = starts(lim, ft, 5)
    assert got[:3] == [10.0, 10.0, 10.0]  # three back to back, then the rate again
    assert got[3:] == [10.1, 10.2]


def test_rate_limiter_change_of_rate_and_off():
    ft = FakeTime()
    lim = RateLimiter(2, clock=ft.clock, sleep=ft.sleep)
    assert starts(lim, ft, 2) == [0.0, 0.5]
    lim.set_rate(None)  # unlimited: no waiting at all
    before = ft.t
    starts(lim, ft, 100)
    assert ft.t == before
    lim.set_rate(0)
    assert lim.qps is None


def test_rate_limiter_wait_is_interrupted_by_stop():
    lim = RateLimiter(0.001)  # one start per 1000 s (real clock)
    assert lim.acquire()  # the first is immediate
    stop = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(lim.acquire(stop)))
    t.start()
    stop.set()
    t.join(10)
    assert result == [False]


def test_a_higher_rate_applies_to_a_start_already_waiting_under_the_old_one():
    """set_qps from 0.02 to 10 while a start waits for its slot 50 s away: it starts at once under the new rate
    (it waited out the old slot)."""
    lim = RateLimiter(0.02)
    assert lim.acquire()  # the first is immediate; the next slot is 50 s away
    stop = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(lim.acquire(stop)))
    t.start()
    time.sleep(0.2)  # it is waiting now (asserted below: it has not returned)
    assert result == []
    lim.set_rate(10)
    t.join(3)
    stop.set()
    assert result == [True], "the waiting start did not take the new rate"


def test_rate_limiter_slots_after_a_faster_rate_follow_the_new_interval():
    ft = FakeTime()
    lim = RateLimiter(0.5, clock=ft.clock, sleep=ft.sleep)
    assert starts(lim, ft, 2) == [0.0, 2.0]  # the third would be due at 4.0
    lim.set_rate(10)
    assert starts(lim, ft, 3) == [2.0, 2.1, 2.2]


def test_cron_window():
    w = CronWindow("* 9-17 * * 1-5")  # office hours, Monday to Friday
    monday_10 = dt.datetime(2024, 1, 1, 10, 30, 15)  # 2024-01-01 is a Monday
    assert w.is_open(monday_10)
    assert not w.is_open(monday_10.replace(hour=8, minute=59))
    assert w.is_open(monday_10.replace(hour=17, minute=59))
    assert not w.is_open(monday_10.replace(hour=18, minute=0))
    assert not w.is_open(dt.datetime(2024, 1, 6, 10, 0))  # Saturday
    assert w.seconds_until_check(dt.datetime(2024, 1, 1, 10, 30, 15)) == pytest.approx(45.0)
    assert w.seconds_until_check(dt.datetime(2024, 1, 1, 10, 30, 59, 950000)) == 0.2  # never busy-loops


def test_cron_window_rejects_a_bad_expression():
    with pytest.raises(ValueError, match="invalid cron"):
        CronWindow("every day at noon")


def test_backoff_delay():
    assert [backoff_delay(n, 1.0, 2.0, 10.0, False) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(0, 1.0, 2.0, 10.0, False) == 1.0
    for n in range(1, 6):
        d = backoff_delay(n, 1.0, 2.0, 100.0, True)
        plain = 2.0 ** (n - 1)
        assert 0.5 * plain <= d <= 1.5 * plain


class CountingMemoryBroker(MemoryBroker):
    """The real memory broker, counting ack round trips and failing the first ``fail`` of them."""

    def __init__(self, queue_name: str, fail: int = 0) -> None:
        super().__init__(queue_name)
        self.ack_calls: list[int] = []
        self.fail = fail

    def ack(self, deliveries):
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("broker away")
        self.ack_calls.append(len(deliveries))
        super().ack(deliveries)


def _in_flight(broker: MemoryBroker, n: int):
    broker.publish([OutgoingMessage(body=f'{{"x": {i}}}') for i in range(n)])
    got = []
    wait_until(lambda: got.extend(broker.fetch(n - len(got), 0.05)) or len(got) == n, timeout=10,
               message="fetched")
    assert broker.queue_size().in_flight == n
    return got


def test_ack_batcher_acks_everything_in_batches():
    broker = CountingMemoryBroker(f"ackb_{uuid.uuid4().hex[:8]}")
    deliveries = _in_flight(broker, 1200)
    batcher = AckBatcher(broker, logging.getLogger("test"), max_batch=500, linger=0.01)
    try:
        for d in deliveries:
            batcher.add(d)
        wait_until(lambda: broker.queue_size().in_flight == 0, timeout=10, message="all acked")
    finally:
        batcher.stop()
    assert sum(broker.ack_calls) == 1200
    assert max(broker.ack_calls) <= 500
    assert len(broker.ack_calls) < 1200 // 10  # batched, not one round trip per message


def test_ack_batcher_retries_after_a_broker_error_and_loses_nothing():
    broker = CountingMemoryBroker(f"ackb_{uuid.uuid4().hex[:8]}", fail=2)
    deliveries = _in_flight(broker, 10)
    batcher = AckBatcher(broker, logging.getLogger("test"), max_batch=500, linger=0.01)
    try:
        for d in deliveries:
            batcher.add(d)
        wait_until(lambda: broker.queue_size().in_flight == 0, timeout=20, message="acked after the outage")
    finally:
        batcher.stop()
    assert broker.fail == 0 and sum(broker.ack_calls) == 10


def test_ack_batcher_stop_flushes_what_is_left():
    broker = CountingMemoryBroker(f"ackb_{uuid.uuid4().hex[:8]}")
    deliveries = _in_flight(broker, 3)
    batcher = AckBatcher(broker, logging.getLogger("test"), max_batch=500, linger=3600)  # never ticks
    for d in deliveries:
        batcher.add(d)
    batcher.stop()
    assert broker.queue_size().in_flight == 0


class _CountingFlushes(AckBatcher):
    def __init__(self, *args, **kwargs) -> None:
        self.flushes = 0
        super().__init__(*args, **kwargs)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_an_idle_ack_batcher_does_not_tick_and_wakes_for_the_first_delivery():
    broker = CountingMemoryBroker(f"ackb_{uuid.uuid4().hex[:8]}")
    deliveries = _in_flight(broker, 2)
    batcher = _CountingFlushes(broker, logging.getLogger("test"), max_batch=500, linger=0.01)
    try:
        time.sleep(0.3)  # 30 lingers: the flusher used to wake (and call flush) at each of them
        assert batcher.flushes == 0
        batcher.add(deliveries[0])  # the first delivery after an idle spell wakes the flusher
        wait_until(lambda: broker.queue_size().in_flight == 1, timeout=5, message="first acked")
        time.sleep(0.1)  # idle again
        flushes = batcher.flushes
        batcher.add(deliveries[1])
        wait_until(lambda: broker.queue_size().in_flight == 0, timeout=5, message="second acked")
        assert batcher.flushes <= flushes + 2
    finally:
        batcher.stop()
