"""A consumer host cut off the network (issue 19, item 3).

The test creates a network namespace joined to the host by a veth pair (funboost.testing.netns) and a
server of its own listening on the host side of the pair; nothing else uses that link. One consumer runs
inside the namespace (the "cut-off host"), one on the host. Mid-run the link goes down: the cut-off
consumer's in-flight work must be reclaimed by the other once its liveness expires, and every task must
run. Then the link comes back: the cut-off consumer's late acks must corrupt nothing, and it must take work
again. No task may be lost; a task may run twice only if the cut-off consumer ran it.

The cut is the veth's host side going down (packets dropped both ways, no reset): ``tc netem`` loss or
latency would need the kernel's sch_netem, which this machine's kernel lacks (the test reports whether it
is there).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from funboost.testing import require_service, wait_until
from funboost.testing.netns import NetnsLink, netem_available, netns_unavailable_reason
from funboost.testing.workers import recording_publisher, stop_all

from .brokers import private_server_options
from .report import record
from .sizes import SIZE


def options_and_cut(kind: str, server: Any) -> tuple[dict[str, Any], float]:
    """The consumers' options, and how long the link stays cut (past the liveness expiry)."""
    if kind == "rabbitmq":
        # AMQP heartbeat 2 s: the server drops the silent connection (and requeues its unacked messages)
        # after two missed heartbeats
        return private_server_options(kind, server, heartbeat=2), 8.0
    return private_server_options(kind, server), 4.0


@pytest.fixture
def link():
    reason = netns_unavailable_reason()
    if reason:
        require_service(f"network namespaces: {reason}")
    with NetnsLink() as lk:
        yield lk


@pytest.mark.parametrize("kind", ["redis_ack_able", "redis_stream", "rabbitmq"])
def test_consumer_cut_off_the_network(kind, link, qname, private_server, start_consumer):
    n1 = SIZE.netcut_tasks
    n2 = max(50, n1 // 3)
    options, cut_seconds = options_and_cut(kind, private_server(kind, link.host_addr))
    cut_off = local = None
    try:
        cut_off = start_consumer(kind, options, "cut_off", task_seconds=0.05, netns=link.namespace)
        local = start_consumer(kind, options, "local", task_seconds=0.05)
        pub = recording_publisher(kind, qname, options)
        pub.push_many(range(n1))
        wait_until(lambda: cut_off.done() >= max(5, n1 // 30), 120, 0.05, "the namespaced consumer under way")
        link.cut()
        cut_at = time.monotonic()
        at_cut = set(cut_off.runs()) | set(local.runs())
        assert len(at_cut) < n1, "every task ran before the cut: the test proved nothing"
        wait_until(lambda: set(cut_off.runs()) | set(local.runs()) >= set(range(n1)), 120, 0.1,
                   f"all {n1} tasks run while the consumer is cut off")
        all_done_after_cut = time.monotonic() - cut_at
        # the link stays down past the server's verdict on the silent consumer (its liveness expiry),
        # so that its in-flight work is reclaimed and its acks come too late: that is the fault under test
        time.sleep(max(0.0, cut_seconds - (time.monotonic() - cut_at)))
        link.restore()
        restored_at = time.monotonic()
        # keep work coming (the host's consumer would otherwise take it all before the other reconnects)
        # until the cut-off consumer runs a task published after the link returned
        published = n1
        while not any(i >= n1 for i in cut_off.runs()):
            assert time.monotonic() - restored_at < 120, \
                "the namespaced consumer took no work within 120 s of the link's return"
            pub.push_many(range(published, published + 10))
            published += 10
            wait_until(lambda: set(cut_off.runs()) | set(local.runs()) >= set(range(published)), 60, 0.02,
                       "the last batch run")
        resumed_after = time.monotonic() - restored_at
        pub.push_many(range(published, published + n2))
        n2 = published + n2 - n1
        wait_until(lambda: set(cut_off.runs()) | set(local.runs()) >= set(range(n1 + n2)), 120, 0.1,
                   f"all {n1 + n2} tasks run")
        netem = netem_available(link.host_dev)
    finally:
        stop_all([cut_off, local])
    a, b = cut_off.runs(), local.runs()
    total = set(range(n1 + n2))
    lost = total - set(a) - set(b)
    twice = {i for i in total if a[i] + b[i] > 1}
    print(f"\n{kind}: N={n1}+{n2}, {len(at_cut)} done at the cut, all done {all_done_after_cut:.1f}s after the "
          f"cut, cut-off consumer working again {resumed_after:.1f}s after the link returned, lost {len(lost)}, "
          f"duplicates {len(twice)} (tc netem available: {netem})")
    assert not lost, f"lost {len(lost)} tasks: {sorted(lost)[:20]}"
    assert all(c == 1 for c in b.values()), "the host's consumer ran a task twice"
    assert all(c == 1 for c in a.values()), "the cut-off consumer ran a task twice"
    assert all(a[i] for i in twice), "a duplicate the cut-off consumer never ran"
    record("network_cut", kind=kind, n=n1 + n2, lost=len(lost), duplicates=len(twice),
           all_done_after_cut_seconds=round(all_done_after_cut, 1), resumed_after_restore_seconds=round(resumed_after, 1))
