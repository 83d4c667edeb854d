"""Task ids (funboost.message.uuid7): RFC 9562 version 7, unique, and independent of the ``random`` module's
shared generator: a user's ``random.seed`` neither repeats ids nor is moved by them, and a forked child does
not repeat its parent's random bits."""
from __future__ import annotations

import os
import random
import re
import sys
import time

import pytest

from funboost.message import uuid7, uuid7_time

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def random_part(task_id: str) -> str:
    """The variant group and the last group: 62 random bits (the third group is the per-process counter)."""
    return task_id[19:]


def test_ids_are_version_7_unique_and_carry_their_time():
    ids = [uuid7() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(UUID7.match(i) for i in ids), next(i for i in ids if not UUID7.match(i))
    assert abs(uuid7_time(ids[-1]) - time.time()) < 2.0


def test_making_ids_does_not_move_the_shared_random_generator():
    random.seed(12345)
    expected = random.random()
    random.seed(12345)
    [uuid7() for _ in range(100)]
    assert random.random() == expected


def test_the_same_user_seed_does_not_repeat_the_random_bits():
    # before: ids drew from the shared generator, so two processes seeded alike (or one seeded twice) drew
    # the same bits, and the same id within a millisecond
    random.seed(7)
    first = uuid7()
    random.seed(7)
    second = uuid7()
    assert random_part(first) != random_part(second)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_random_bits():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id and leave at once (no pytest teardown in the child)
        try:
            os.write(write_end, uuid7().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    mine = uuid7()
    theirs = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert UUID7.match(theirs), theirs
    assert random_part(theirs) != random_part(mine)
