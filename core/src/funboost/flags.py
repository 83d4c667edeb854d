"""Queue-control flags: the names under which pause / qps / concurrency settings are stored in the state
backend (``StateBackend.set_flag`` / ``get_flags``), read by every consumer of the queue."""
from __future__ import annotations

import enum


class QueueFlag(str, enum.Enum):
    """A per-queue control flag. A str-enum: stored under its plain value, and a stored name compares
    (and hashes) equal to the member."""

    PAUSE = "pause"  # bool: consumers stop starting tasks (Booster.pause / resume)
    QPS = "qps"  # float or None: the queue's rate, overriding BoosterParams.qps (Booster.set_qps)
    CONCURRENT_NUM = "concurrent_num"  # int: worker count of each consumer (Booster.set_concurrent_num)

    def __str__(self) -> str:
        return self.value
