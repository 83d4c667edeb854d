"""The publisher's delivery-tag bookkeeping (ConfirmBook), against what a server may send: in-order and
out-of-order confirms, ``multiple`` acks across batches, nacks. Pure logic: no server needed."""
from __future__ import annotations

import random

from funboost_rabbitmq.connection import ConfirmBook, _Batch


def batch(n: int) -> _Batch:
    return _Batch([("", "q", b"", b"\x00\x00")] * n)


def test_multiple_acks_across_batches():
    book = ConfirmBook()
    a, b, c = batch(3), batch(4), batch(2)
    book.add(a, range(3))      # tags 1-3
    book.add(b, range(4))      # tags 4-7
    book.add(c, [1, 0])        # tags 8-9 (a retry sends a subset, in any order)
    book.confirm(5, multiple=True, nack=False)
    assert a.done.is_set() and not a.pending
    assert b.pending == {2, 3} and not b.done.is_set()
    book.confirm(9, multiple=True, nack=False)
    assert not b.pending and not c.pending and c.done.is_set()
    assert len(book) == 0


def test_a_nacked_tag_is_not_acked_by_a_later_multiple_ack():
    book = ConfirmBook()
    a = batch(5)
    book.add(a, range(5))  # tags 1-5
    book.confirm(3, multiple=False, nack=True)
    assert a.nacked and a.done.is_set()
    book.confirm(5, multiple=True, nack=False)
    assert a.pending == {2}  # message 2 (tag 3) was refused: it must be sent again
    assert len(book) == 0


def test_out_of_order_single_acks_settle_once_and_clean_up():
    book = ConfirmBook()
    a, b = batch(4), batch(2)
    book.add(a, range(4))  # tags 1-4
    book.add(b, range(2))  # tags 5-6
    for tag in (3, 2, 5):
        book.confirm(tag, multiple=False, nack=False)
    assert a.pending == {0, 3} and b.pending == {1}
    book.confirm(3, multiple=False, nack=True)  # a repeat for a settled tag changes nothing
    assert not a.nacked
    book.confirm(1, multiple=False, nack=False)  # closes the gap up to tag 3
    book.confirm(4, multiple=False, nack=False)
    assert not a.pending and a.done.is_set() and len(book) == 1
    book.confirm(6, multiple=True, nack=False)
    assert not b.pending and len(book) == 0


def test_fail_all_and_reset():
    book = ConfirmBook()
    a = batch(2)
    book.add(a, range(2))
    book.reset()
    assert a.done.is_set() and a.error and a.pending == {0, 1}
    assert book.last_tag == 0 and len(book) == 0


def test_random_confirm_sequences_match_a_model():
    """Batches of random sizes; the 'server' settles every tag exactly once, in a random mix of single
    acks (any order), single nacks and multiple acks/nacks over whatever is outstanding up to a tag."""
    rng = random.Random(7)
    for _ in range(300):
        book = ConfirmBook()
        batches, owner = [], {}  # owner: tag -> (batch number, message index)
        for k in range(rng.randint(1, 6)):
            n = rng.randint(1, 20)
            b = batch(n)
            indexes = list(range(n))
            rng.shuffle(indexes)
            first = book.last_tag + 1
            book.add(b, indexes)
            batches.append(b)
            for off, i in enumerate(indexes):
                owner[first + off] = (k, i)
        expected_pending = [set(b.pending) for b in batches]
        expected_nacked = [False] * len(batches)
        outstanding = sorted(owner)
        while outstanding:
            nack = rng.random() < 0.15
            if rng.random() < 0.4:
                tag = rng.choice(outstanding)
                settled = [t for t in outstanding if t <= tag]
                book.confirm(tag, multiple=True, nack=nack)
            else:
                tag = rng.choice(outstanding)
                settled = [tag]
                book.confirm(tag, multiple=False, nack=nack)
            for t in settled:
                k, i = owner[t]
                if nack:
                    expected_nacked[k] = True
                else:
                    expected_pending[k].discard(i)
                outstanding.remove(t)
        for b, pending, nacked in zip(batches, expected_pending, expected_nacked):
            assert b.pending == pending
            assert b.nacked == nacked
        assert len(book) == 0
