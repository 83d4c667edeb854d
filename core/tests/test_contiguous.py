"""ContiguousTracker (used by funboost-kafka and funboost-mysql-cdc): the safe commit point never passes an unfinished offset."""
import random

from funboost.contiguous import ContiguousTracker


def test_nothing_fetched_nothing_to_commit():
    t = ContiguousTracker()
    assert t.safe_offset() is None and t.to_commit() is None


def test_out_of_order_completion():
    t = ContiguousTracker()
    for off in range(10, 15):
        t.add(off)
    assert t.safe_offset() == 10
    for off in (11, 13, 14):
        t.done(off)
    assert t.safe_offset() == 10  # 10 still runs
    t.done(10)
    assert t.safe_offset() == 12
    t.done(12)
    assert t.safe_offset() == 15 and t.in_flight() == 0


def test_gaps_in_offsets_and_committed_marker():
    t = ContiguousTracker()
    for off in (3, 7, 8):  # compacted / control records leave gaps
        t.add(off)
    t.done(7)
    assert t.to_commit() == 3
    t.committed = 3
    assert t.to_commit() is None
    t.done(3)
    assert t.to_commit() == 8
    t.done(8)
    assert t.to_commit() == 9


def test_random_order_never_passes_unfinished():
    rng = random.Random(7)
    t = ContiguousTracker()
    offsets = list(range(200))
    for off in offsets:
        t.add(off)
    unfinished = set(offsets)
    order = offsets[:]
    rng.shuffle(order)
    for off in order:
        t.done(off)
        unfinished.discard(off)
        safe = t.safe_offset()
        assert safe == (min(unfinished) if unfinished else 200)


def test_duplicate_or_stale_done_is_harmless():
    t = ContiguousTracker()
    for off in range(3):
        t.add(off)
    t.done(0)
    t.done(0)  # acked twice
    assert t.safe_offset() == 1
    t.done(-5)  # below everything pending
    assert t.safe_offset() == 1


def test_batch_add_and_done_match_single_calls():
    t = ContiguousTracker()
    t.add_many([5, 6, 7, 9])
    assert t.safe_offset() == 5
    t.done_many([9, 6])
    assert t.safe_offset() == 5 and t.in_flight() == 2
    t.done_many([5, 7])
    assert t.safe_offset() == 10 and t.in_flight() == 0
