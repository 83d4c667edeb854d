"""Due times as frameworks carry them: a number (epoch seconds), a ``datetime`` or an ISO-8601 string."""
from __future__ import annotations

import datetime as dt
import time
from typing import Optional, Union

EtaLike = Union[None, int, float, str, dt.datetime]


def parse_eta(eta: EtaLike) -> Optional[float]:
    """Epoch seconds of a framework's eta; None when there is none or it cannot be read.

    A naive ``datetime`` (or ISO string without offset) is taken as UTC: every framework this adapter
    serves (Celery with ``enable_utc``, dramatiq, huey, rq) writes UTC.
    """
    if eta is None or isinstance(eta, bool):
        return None
    if isinstance(eta, (int, float)):
        return float(eta)
    if isinstance(eta, dt.datetime):
        return _aware(eta).timestamp()
    try:
        return _aware(dt.datetime.fromisoformat(str(eta).strip().replace("Z", "+00:00"))).timestamp()
    except ValueError:
        return None


def eta_datetime(eta: float) -> dt.datetime:
    """An epoch-seconds eta as the aware UTC ``datetime`` most framework APIs take."""
    return dt.datetime.fromtimestamp(eta, tz=dt.timezone.utc)


def seconds_until(eta: EtaLike, now: Optional[float] = None) -> float:
    """Seconds until ``eta`` is due (0 when due, past or unreadable)."""
    due = parse_eta(eta)
    if due is None:
        return 0.0
    return max(0.0, due - (time.time() if now is None else now))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
