"""Due times as frameworks carry them: a number (epoch seconds), a ``datetime`` or an ISO-8601 string.

The conversion itself is core's :func:`funboost.eta.eta_to_timestamp`; what differs for a framework's
header is only that a naive time means UTC (frameworks write UTC; users write local time) and that an
unreadable header is "no eta" rather than an error (the message runs now instead of never)."""
from __future__ import annotations

import datetime as dt
import time
from typing import Optional, Union

from funboost.eta import eta_to_timestamp

EtaLike = Union[None, int, float, str, dt.datetime]


def parse_eta(eta: EtaLike) -> Optional[float]:
    """Epoch seconds of a framework's eta; None when there is none or it cannot be read.

    A naive ``datetime`` (or ISO string without offset) is taken as UTC: every framework this adapter
    serves (Celery with ``enable_utc``, dramatiq, huey, rq) writes UTC.
    """
    if isinstance(eta, str):
        try:
            eta = dt.datetime.fromisoformat(eta.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(eta, dt.datetime) and eta.tzinfo is None:
        eta = eta.replace(tzinfo=dt.timezone.utc)
    try:
        return eta_to_timestamp(eta)
    except ValueError:  # a bool, or a type no framework writes
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
