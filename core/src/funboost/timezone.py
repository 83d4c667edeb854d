"""The time zone of schedules and of the original funboost's formatted times.

``FUNBOOST_TIMEZONE`` (an IANA name such as ``Asia/Shanghai``), else ``FunboostCommonConfig.TIMEZONE``
(set by code, or read from an original ``funboost_config.py``, whose pick-up maps it to the variable),
else the machine's local time zone. Cron and date jobs of :mod:`funboost.timing_job` fire in it, and
``FunctionResultStatus.publish_time_format`` is written in it.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any, Optional

_cache: dict[str, Optional[dt.tzinfo]] = {}
_lock = threading.Lock()


def _name() -> Any:
    name = os.environ.get("FUNBOOST_TIMEZONE")
    if name:
        return name
    from funboost.funboost_config_deafult import FunboostCommonConfig
    return FunboostCommonConfig.TIMEZONE


def configured_timezone() -> Optional[dt.tzinfo]:
    """The configured zone, or None for the machine's local one. An unknown name raises ValueError."""
    name = _name()
    if not name:
        return None
    if isinstance(name, dt.tzinfo):
        return name
    key = str(name)
    with _lock:
        if key not in _cache:
            import zoneinfo
            try:
                _cache[key] = zoneinfo.ZoneInfo(key)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {key!r} (FUNBOOST_TIMEZONE / FunboostCommonConfig.TIMEZONE): "
                                 f"use an IANA name such as 'Asia/Shanghai' or 'UTC'") from exc
        return _cache[key]


def format_local(ts: Optional[float]) -> Optional[str]:
    """``'%Y-%m-%d %H:%M:%S'`` of epoch seconds in the configured zone (None for None)."""
    if ts is None:
        return None
    tz = configured_timezone()
    when = dt.datetime.fromtimestamp(float(ts), tz) if tz is not None else dt.datetime.fromtimestamp(float(ts))
    return when.strftime("%Y-%m-%d %H:%M:%S")
