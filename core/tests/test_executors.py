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
    assert pool.thread_count == 10 and pool.free_capacity() == 0
    release.set()
    wait_until(lambda: pool.free_capacity() == 10, 5)
    wait_until(lambda: pool.thread_count == 0, 5, message="idle threads exit")
    pool.submit(lambda: None)  # and it grows again
    wait_until(lambda: pool.free_capacity() == 10, 5)
    pool.shutdown()


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


@pytest.mark.parametrize("mode", ["gevent", "eventlet"])
def test_green_modes_refuse_to_start_without_monkey_patching(qname, mode):
    @boost(BoosterParams(queue_name=f"{qname}_{mode}", broker_kind="memory", state_backend="memory",
                         concurrent_mode=mode, log_to_console=False))
    def f(x):
        pass

    expected = "monkey" if importlib.util.find_spec(mode) else f"pip install {mode}"
    with pytest.raises(RuntimeError, match=expected):
        f.consume()
