"""A qps setting that cannot be a rate (NaN, infinity, negative, text) is refused where it is set, and a
consumer that finds one stored anyway (an older manager, a hand-written flag) runs without a limit instead
of stopping: an infinite qps once ended the dispatch thread (int(inf) while sizing a fetch) while the
consumer kept sending heartbeats, so it looked alive and ran nothing."""
import math
import uuid

import pytest

from funboost import BoosterParams, boost
from funboost.admin import QueueAdmin
from funboost.flags import qps_value
from funboost.testing import wait_until


@pytest.mark.parametrize("value, expected", [(None, None), (0, None), ("none", None), ("off", None), (5, 5.0),
                                             ("2.5", 2.5), (0.01, 0.01)])
def test_usable_settings(value, expected):
    assert qps_value(value) == expected


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "inf", "nan", -1, True, "2030-01-01", [5]])
def test_unusable_settings_are_refused(value):
    with pytest.raises(ValueError, match="qps"):
        qps_value(value)


def test_booster_params_refuse_an_infinite_qps():
    with pytest.raises(ValueError, match="finite"):
        BoosterParams(queue_name="q", qps=math.inf)


@pytest.mark.parametrize("stored", [math.inf, math.nan, "fast"])
def test_a_consumer_finding_an_unusable_qps_flag_keeps_running(stored):
    done = []

    @boost(BoosterParams(queue_name=f"qps_flag_{uuid.uuid4().hex[:8]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def work(x):
        done.append(x)

    with pytest.raises(ValueError):
        work.set_qps(math.inf)
    with pytest.raises(ValueError):
        QueueAdmin(work.state_backend()).set_qps(work.queue_name, math.inf)
    work.state_backend().set_flag(work.queue_name, "qps", stored)  # as a careless writer would
    work.consume()
    try:
        wait_until(lambda: work.get_live_consumers(), 10, message="the consumer's first heartbeat (flags read)")
        for i in range(5):
            work.push(i)
        wait_until(lambda: sorted(done) == list(range(5)), 10, message="tasks ran despite the stored qps")
        work.set_qps(None)
        work.push(5)
        wait_until(lambda: 5 in done, 10, message="a task after the flag was reset")
    finally:
        work.stop_consume(5)


def test_a_changed_setting_shows_in_the_heartbeat_at_once():
    """`funboost pause Q --wait 3` read the consumer's heartbeat, written every 5 s: it failed although the
    consumer had paused within a second. A consumer that applies a changed pause / qps / concurrency now
    writes its heartbeat at once."""
    @boost(BoosterParams(queue_name=f"hb_flag_{uuid.uuid4().hex[:8]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def work(x):
        return x

    work.consume()
    try:
        wait_until(lambda: work.get_live_consumers(), 10, message="the consumer's first heartbeat")
        work.pause()  # the next regular beat is ~5 s away
        wait_until(lambda: all(c.get("paused") for c in work.get_live_consumers()), 3,
                   message="the heartbeat shows the pause within 3 s")
        work.set_qps(7)
        wait_until(lambda: all(c.get("qps") == 7 for c in work.get_live_consumers()), 3,
                   message="the heartbeat shows the new qps within 3 s")
    finally:
        work.stop_consume(5)


@pytest.mark.parametrize("n", [0, -1, 2.5, "3", True, None])
def test_set_concurrent_num_refuses_what_is_not_a_worker_count(n):
    @boost(BoosterParams(queue_name=f"conc_{uuid.uuid4().hex[:8]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def work(x):
        return x

    with pytest.raises(ValueError, match="concurrent_num"):
        work.set_concurrent_num(n)
    # the control plane's entry point applies the same rule (it stored int(2.5) == 2 and True as 1)
    with pytest.raises(ValueError, match="concurrent_num"):
        QueueAdmin(work.state_backend()).set_concurrency(work.queue_name, n)


def test_a_consumer_ignores_a_stored_concurrency_below_one():
    """set_concurrent_num(-1) was accepted and stopped the queue for good (no worker could start)."""
    done = []

    @boost(BoosterParams(queue_name=f"conc_flag_{uuid.uuid4().hex[:8]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False, concurrent_num=3))
    def work(x):
        done.append(x)

    work.state_backend().set_flag(work.queue_name, "concurrent_num", -1)  # as a careless writer would
    work.consume()
    try:
        wait_until(lambda: work.get_live_consumers(), 10, message="the consumer's first heartbeat (flags read)")
        for i in range(5):
            work.push(i)
        wait_until(lambda: sorted(done) == list(range(5)), 10, message="tasks ran despite the stored concurrency")
    finally:
        work.stop_consume(5)
