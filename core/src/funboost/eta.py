"""When a delayed message is due: eta parsing exists once, here.

Used by the publisher (``TaskOptions.eta`` / ``countdown``), the consumer (holding a message that arrived
early) and the framework-as-broker plugins (a foreign message's eta header)."""
from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Mapping, Optional, Union

EtaValue = Union[_dt.datetime, str, float, int, None]


def eta_to_timestamp(eta: EtaValue) -> Optional[float]:
    """An eta as epoch seconds: a number (epoch seconds), a ``datetime`` (naive = local time, as users
    write them), or an ISO-8601 / ``"%Y-%m-%d %H:%M:%S"`` string. None stays None; anything else is a
    ValueError."""
    if eta is None:
        return None
    if isinstance(eta, bool):
        raise ValueError(f"cannot understand eta {eta!r}")
    if isinstance(eta, (int, float)):
        return float(eta)
    if isinstance(eta, str):
        text = eta
        try:
            eta = _dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                eta = _dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise ValueError(f"cannot understand eta {text!r}") from None
    if isinstance(eta, _dt.datetime):
        return eta.timestamp()
    raise ValueError(f"cannot understand eta {eta!r}")


def message_eta(extra: Mapping[str, Any]) -> Optional[float]:
    """When the message with this envelope ``extra`` is due (epoch seconds), from its ``eta`` or its
    ``countdown`` (counted from ``publish_time``); None when it is not delayed."""
    if extra.get("eta") is not None:
        return eta_to_timestamp(extra["eta"])
    if extra.get("countdown") is not None:
        return float(extra.get("publish_time", time.time())) + float(extra["countdown"])
    return None
