"""funboost.engine.liveness: the ticker (injected clock, no timing assertions) and the consumer lease."""
import gc
import os
import subprocess
import sys
import threading
import time

import pytest

from funboost.engine.liveness import HOST_KEY, ConsumerLease, LeaseInfo, LivenessOptions, Ticker, pid_gone, ticker
from funboost.testing import wait_until


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_ticker_calls_each_callback_at_its_interval():
    clock = FakeClock()
    tk = Ticker(clock, autostart=False)
    calls = []
    a = tk.every(2.0, lambda: calls.append("a"))
    b = tk.every(5.0, lambda: calls.append("b"), first_after=0.0)
    for _ in range(11):  # t = 1000 .. 1010
        tk.run_due()
        clock.t += 1.0
    assert calls.count("a") == 5  # 1002, 1004, 1006, 1008, 1010
    assert calls.count("b") == 3  # 1000, 1005, 1010
    a.cancel()
    b.cancel()
    assert len(tk) == 0


def test_a_failing_callback_is_retried_soon_and_does_not_stop_the_others():
    clock = FakeClock()
    tk = Ticker(clock, autostart=False)
    ok, failures = [], []

    def flaky():
        failures.append(clock.t)
        if len(failures) < 3:
            raise ConnectionError("server away")

    tk.every(10.0, flaky, first_after=0.0, retry_after=0.5)
    tk.every(1.0, lambda: ok.append(clock.t), first_after=0.0)
    for _ in range(6):
        tk.run_due()
        clock.t += 0.5
    assert failures == [1000.0, 1000.5, 1001.0]  # retried after 0.5 s, not after 10 s; then it succeeded
    assert ok == [1000.0, 1001.0, 1002.0]


def test_bound_methods_are_held_weakly():
    clock = FakeClock()
    tk = Ticker(clock, autostart=False)

    class Owner:
        n = 0

        def beat(self):
            self.n += 1

    o = Owner()
    tk.every(1.0, o.beat, first_after=0.0)
    tk.run_due()
    assert o.n == 1 and len(tk) == 1
    del o
    gc.collect()
    clock.t += 1.0
    tk.run_due()
    assert len(tk) == 0  # the dead owner's tick is gone


def test_cancel_waits_for_a_call_in_progress():
    tk = Ticker()
    inside, release, finished = threading.Event(), threading.Event(), []

    def slow():
        inside.set()
        release.wait(10)
        finished.append(True)

    tick = tk.every(0.01, slow, first_after=0.0)
    assert inside.wait(10)
    threading.Timer(0.05, release.set).start()
    tick.cancel(wait=True)
    assert finished == [True]  # cancel returned only after the call ended


def test_the_process_ticker_runs_registered_callbacks_in_a_background_thread():
    hits = []
    tick = ticker().every(0.01, lambda: hits.append(threading.current_thread().name), first_after=0.0)
    try:
        wait_until(lambda: len(hits) >= 3, timeout=10, message="three ticks")
    finally:
        tick.cancel()
    assert set(hits) == {"funboost-liveness"}


def test_lease_verdicts():
    clock = FakeClock()
    lease = ConsumerLease("q", "me", heartbeat_interval=1.0, heartbeat_timeout=5.0, renew=lambda info: None,
                          clock=clock)
    fresh = LeaseInfo("a", "elsewhere", 1, clock.t - 4.9)
    stale = LeaseInfo("b", "elsewhere", 1, clock.t - 5.1)
    mine_stale = LeaseInfo("me", HOST_KEY, os.getpid(), clock.t - 100)
    assert not lease.is_dead(fresh)
    assert lease.is_dead(stale)
    assert lease.is_dead(None)  # holds messages but never wrote a lease
    leases = {"a": fresh, "b": stale, "me": mine_stale}
    assert lease.dead_holders(["a", "b", "c", "me"], leases) == ["b", "c"]  # never itself


def test_lease_of_a_killed_process_on_this_host_is_dead_at_once():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = LeaseInfo("x", HOST_KEY, p.pid, time.time())
    lease = ConsumerLease("q", "me", heartbeat_interval=1.0, heartbeat_timeout=60.0, renew=lambda i: None)
    no_pid_check = ConsumerLease("q", "me", heartbeat_interval=1.0, heartbeat_timeout=60.0,
                                 renew=lambda i: None, check_pid=False)
    assert not lease.is_dead(alive)
    p.kill()
    p.wait()
    assert pid_gone(p.pid)
    assert lease.is_dead(alive)  # fresh heartbeat, but its process is gone
    assert not no_pid_check.is_dead(alive)


def test_lease_renews_on_the_ticker_and_stops():
    renewals = []
    lease = ConsumerLease("q", "me", heartbeat_interval=0.02, heartbeat_timeout=1.0, renew=renewals.append)
    lease.start()
    assert renewals and renewals[0].consumer_id == "me" and renewals[0].pid == os.getpid()
    wait_until(lambda: len(renewals) >= 3, timeout=10, message="renewals from the ticker")
    lease.stop()
    n = len(renewals)
    assert not lease.running
    # no renewal after stop() returned (stop waits for one in progress)
    time.sleep(0.1)
    assert len(renewals) == n


def test_inline_reclaim_schedule():
    clock = FakeClock()
    lease = ConsumerLease("q", "me", heartbeat_interval=1.0, heartbeat_timeout=5.0, renew=lambda i: None,
                          reclaim_interval=3.0, clock=clock)
    assert lease.reclaim_due(consume=False) and lease.reclaim_due()  # the first: at once
    assert not lease.reclaim_due()
    clock.t += 2.9
    assert not lease.reclaim_due()
    clock.t += 0.2
    assert lease.reclaim_due()
    lease.restart_reclaim_schedule()
    assert lease.reclaim_due()


def test_renew_due_at_half_an_interval():
    clock = FakeClock()
    lease = ConsumerLease("q", "me", heartbeat_interval=2.0, heartbeat_timeout=5.0, renew=lambda i: None,
                          clock=clock)
    assert lease.renew_due()  # never written
    lease.mark_renewed(clock.t)
    clock.t += 0.9
    assert not lease.renew_due()
    clock.t += 0.2
    assert lease.renew_due()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_takes_a_new_consumer_id():
    lease = ConsumerLease("q", "parent-id", heartbeat_interval=1.0, heartbeat_timeout=5.0, renew=lambda i: None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            info = lease.info()
            os.write(w, f"{info.consumer_id} {info.pid}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        cid, child_pid = f.read().split()
    os.waitpid(pid, 0)
    assert cid != "parent-id" and "q" not in ("", cid) and int(child_pid) == pid
    assert lease.consumer_id == "parent-id"


def test_options_validation():
    LivenessOptions(heartbeat_interval=1, heartbeat_timeout=2)
    with pytest.raises(ValueError):
        LivenessOptions(heartbeat_interval=2, heartbeat_timeout=3)
    with pytest.raises(ValueError):
        ConsumerLease("q", "me", heartbeat_interval=2, heartbeat_timeout=3, renew=lambda i: None)
