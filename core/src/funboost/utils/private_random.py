"""funboost's own random generator, for the random bits of task ids and for jitter (retry backoff, lock
retries).

Not the ``random`` module's shared generator, for two reasons. A user's ``random.seed(n)`` (the same seed in
every worker process is common in data and ML code) would otherwise make two processes draw the same bits,
and so the same task ids within one millisecond. And drawing from the shared generator would move the
user's seeded sequence every time a task is pushed. Seeded from ``os.urandom``, and seeded again in a
forked child, which would otherwise repeat its parent's bits (Python reseeds only the shared generator
after a fork)."""
from __future__ import annotations

import os
import random

rng = random.Random()  # no seed given: seeded from os.urandom

if hasattr(os, "register_at_fork"):  # POSIX; a process started by spawn imports this module afresh
    os.register_at_fork(after_in_child=rng.seed)
