"""Queue-control flags: the names under which pause / qps / concurrency settings are stored in the state
backend (``StateBackend.set_flag`` / ``get_flags``), read by every consumer of the queue."""
from __future__ import annotations

import enum
import math
from typing import Any, Optional


class QueueFlag(str, enum.Enum):
    """A per-queue control flag. A str-enum: stored under its plain value, and a stored name compares
    (and hashes) equal to the member."""

    PAUSE = "pause"  # bool: consumers stop starting tasks (Booster.pause / resume)
    QPS = "qps"  # float or None: the queue's rate, overriding BoosterParams.qps (Booster.set_qps)
    CONCURRENT_NUM = "concurrent_num"  # int: worker count of each consumer (Booster.set_concurrent_num)

    def __str__(self) -> str:
        return self.value


def qps_value(value: Any) -> Optional[float]:
    """The rate a qps setting means: None (no limit) for None, 0 or "none" / "off"; a finite number > 0 (or
    its text) as a float. Anything else (NaN, infinity, a negative number, a bool, other text) is a
    ValueError: an infinite rate once stopped every consumer of the queue (it cannot size a fetch)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "off", "unlimited", "0", ""):
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"qps must be a number of runs per second or 'none', got {value!r}") from None
    elif type(value) is bool or not isinstance(value, (int, float)):
        raise ValueError(f"qps must be a number of runs per second or None, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"qps must be a finite number >= 0 (0 or None: no limit), got {value!r}")
    return float(value) if value else None


def concurrency_value(value: Any) -> int:
    """The worker count a concurrent_num setting means: an integer >= 1 (an int or a whole float). Anything
    else (0, a negative or fractional number, NaN, infinity, a bool, text) is a ValueError: a count below 1
    written to the flag stopped every consumer of the queue."""
    if type(value) is bool or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 1:
        raise ValueError(f"concurrent_num must be an integer >= 1, got {value!r}")
    return int(value)
