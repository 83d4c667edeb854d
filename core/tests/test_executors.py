"""Executors: on-demand growth and idle shrink, bounded prefetch, clear errors for unpatched green modes."""
import importlib.util
import threading

import pytest

from funboost import BoosterParams, boost
from funboost.engine.executors import FlexibleThreadPool
from funboost.testing import wait_until


def test_thread_pool_grows_on_demand_and_shrinks_when_idle():
    pool = FlexibleThreadPool(10, idle_timeout=0.3)
    release = threading.Event()
    for _ in range(10):
        pool.submit(release.wait, 10)
    assert pool.free_capacity() == 0
    assert pool.thread_count == 10
    release.set()
    wait_until(lambda: pool.free_capacity() == 10, 5)
    wait_until(lambda: pool.thread_count == 0, 5, message="idle threads exit")
    pool.submit(lambda: None)  # and it grows again
    wait_until(lambda: pool.free_capacity() == 10, 5)
    pool.shutdown()


def test_slow_tasks_fan_out_to_every_thread():
    """Tasks that block each get a thread."""
    n = 20
    pool = FlexibleThreadPool(n)
    barrier = threading.Barrier(n + 1)
    for _ in range(n):
        pool.submit(barrier.wait, 20)
    barrier.wait(20)  # breaks (BrokenBarrierError) unless all n tasks run at the same time
    assert pool.wait_idle(10)
    pool.shutdown()


def test_a_thread_that_runs_out_of_tasks_refills_the_pool_itself():
    pool = FlexibleThreadPool(4)
    ran = []
    more = [list(range(1, 8))]

    def refill() -> int:  # what Consumer.refill does with a local broker: submit without waiting
        batch, more[0] = more[0], []
        for i in batch:
            pool.submit(ran.append, i)
        return len(batch)

    pool.refill = refill
    pool.submit(ran.append, 0)
    wait_until(lambda: len(ran) == 8, 10, message="the refilled tasks ran with no submit from outside")
    assert sorted(ran) == list(range(8))
    pool.shutdown()


def test_shutdown_runs_what_was_submitted_then_ends_every_thread():
    pool = FlexibleThreadPool(3, idle_timeout=60)
    gate = threading.Event()
    ran = []
    for i in range(3):
        pool.submit(gate.wait, 10)
    for i in range(5):
        pool.submit(ran.append, i)
    wait_until(lambda: pool.thread_count == 3, 10)
    gate.set()
    pool.shutdown(wait=True)
    assert sorted(ran) == list(range(5))
    wait_until(lambda: pool.thread_count == 0, 10, message="every thread ended, sleeping ones included")
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.append, 99)


def test_consumer_never_takes_more_than_it_can_start(qname):
    release = threading.Event()
    started = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", concurrent_num=3,
                         log_to_console=False))
    def slow(i):
        started.append(i)
        release.wait(20)

    slow.push_many(range(30))
    slow.consume()
    try:
        wait_until(lambda: len(started) == 3, 10)
        size = slow.queue_size()
        assert size.in_flight == 3 and size.ready == 27, size  # bounded prefetch: no hoarding
    finally:
        release.set()
        wait_until(lambda: len(started) == 30, 20)
        slow.stop_consume(5)


def test_one_thread_runs_a_memory_queue_in_publish_order_while_it_is_pushed(qname):
    """With a local broker two threads fetch (the dispatch thread and a worker that ran out of tasks,
    Consumer.refill); each fetches and submits under one lock, so one thread still runs the tasks in the
    order they were pushed (without the lock: 2-5 of 20,000 out of order in each of 3 runs)."""
    ran: list[int] = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", concurrent_num=1,
                         log_to_console=False))
    def f(i):
        ran.append(i)

    f.consume()
    try:
        n = 20000
        for i in range(n):
            f.push(i)
        wait_until(lambda: len(ran) == n, 60)
        assert ran == list(range(n))
    finally:
        f.stop_consume(5)


@pytest.mark.parametrize("mode", ["gevent", "eventlet"])
def test_green_modes_refuse_to_start_without_monkey_patching(qname, mode):
    @boost(BoosterParams(queue_name=f"{qname}_{mode}", broker_kind="memory", state_backend="memory",
                         concurrent_mode=mode, log_to_console=False))
    def f(x):
        pass

    expected = "monkey" if importlib.util.find_spec(mode) else f"pip install {mode}"
    with pytest.raises(RuntimeError, match=expected):
        f.consume()


def _gated_pool(n: int):
    pool = FlexibleThreadPool(n)
    gates = [threading.Event() for _ in range(n)]
    for g in gates:
        pool.submit(g.wait, 30)
    assert pool.free_capacity() == 0
    return pool, gates


def test_waiters_wake_when_what_they_wait_for_is_free_and_not_before():
    """wait_for_free(k) sleeps through tasks that free fewer than k slots and wakes once k are free;
    wait_for_capacity waiting beside it wakes at the first free slot (waiters with different needs)."""
    pool, gates = _gated_pool(6)
    results: dict[str, bool] = {}

    def wait(name: str, fn, *args) -> threading.Thread:
        t = threading.Thread(target=lambda: results.__setitem__(name, fn(*args)), daemon=True)
        t.start()
        return t

    half = wait("half", pool.wait_for_free, 3, 30)
    gates[0].set()
    one = wait("one", pool.wait_for_capacity, 30)
    one.join(10)
    assert results.get("one") is True
    gates[1].set()
    wait_until(lambda: pool.free_capacity() == 2, 10)
    half.join(0.2)
    assert half.is_alive(), "woke with 2 of the 3 slots it waits for"
    gates[2].set()
    half.join(10)
    assert results.get("half") is True and not half.is_alive()
    for g in gates:
        g.set()
    assert pool.wait_idle(10)
    pool.shutdown()


def test_wait_for_free_times_out_and_a_later_waiter_still_wakes():
    pool, gates = _gated_pool(4)
    assert pool.wait_for_free(2, 0.05) is False  # nothing finished: its deadline, not a wake-up, ends it
    done = threading.Event()
    t = threading.Thread(target=lambda: pool.wait_for_free(4, 30) and done.set(), daemon=True)
    t.start()
    for g in gates:
        g.set()
    assert done.wait(10), "the waiter was not woken when the pool went idle"
    pool.shutdown()
