"""The message envelope, compatible with the original funboost's wire format.

A message is a JSON object: the function's keyword arguments at the top level plus one reserved key,
``extra``, holding ``task_id`` (UUIDv7), ``publish_time`` (epoch seconds, 4 decimals),
``publish_time_format`` and any per-message TaskOptions. A foreign message without ``extra`` is filled in.
Bytes from the wire are only ever parsed as JSON, never unpickled.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from funboost.exceptions import MalformedMessage

EXTRA = "extra"

try:  # orjson is optional; it is a good deal faster when installed
    import orjson as _orjson

    def dumps(obj: Any) -> str:
        return _orjson.dumps(obj, default=_default).decode("utf-8")

    def loads(data: Any) -> Any:
        return _orjson.loads(data)
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=lambda o: _default(o))

    def dumps(obj: Any) -> str:
        return _encoder.encode(obj)

    loads = json.loads


def _default(obj: Any) -> Any:
    import datetime as dt
    import decimal
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"argument of type {type(obj).__name__} is not JSON serializable: {obj!r}")


_last_uuid7_ms = 0
_uuid7_counter = 0


def uuid7() -> str:
    """A UUIDv7 string: 48-bit unix milliseconds, then randomness; sortable by creation time."""
    global _last_uuid7_ms, _uuid7_counter
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    if ms == _last_uuid7_ms:
        _uuid7_counter = (_uuid7_counter + 1) & 0xFFF
    else:
        _last_uuid7_ms, _uuid7_counter = ms, rand >> 68
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (_uuid7_counter & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def build_envelope(kwargs: dict, task_id: Optional[str] = None, extra_options: Optional[dict] = None,
                   publish_time: Optional[float] = None) -> dict:
    """A new envelope dict; ``kwargs`` is copied, never mutated."""
    now = time.time() if publish_time is None else publish_time
    extra = {"task_id": task_id or uuid7(), "publish_time": round(now, 4), "publish_time_format": format_time(now)}
    if extra_options:
        for k, v in extra_options.items():
            if k in ("task_id", "publish_time", "publish_time_format") and v is None:
                continue
            extra[k] = v
    msg = dict(kwargs)
    msg[EXTRA] = extra
    return msg


@dataclass
class DecodedMessage:
    """A message taken from the broker, decoded and checked."""

    kwargs: dict
    extra: dict
    full: dict = field(repr=False)

    @property
    def task_id(self) -> str:
        return self.extra["task_id"]


def decode(body: Any) -> DecodedMessage:
    """Parse a broker body (str/bytes JSON, or a dict from an in-process broker) into a DecodedMessage.
    Raises MalformedMessage with the reason; never returns a half-filled message."""
    if isinstance(body, dict):
        obj = body
    else:
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, str):
            raise MalformedMessage(f"message body has type {type(body).__name__}, expected JSON text")
        try:
            obj = loads(body)
        except (ValueError, TypeError) as exc:
            preview = body[:200] if isinstance(body, (str, bytes)) else body
            raise MalformedMessage(f"message is not valid JSON ({exc}): {preview!r}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"message must be a JSON object, got {type(obj).__name__}")
    extra = obj.get(EXTRA)
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        raise MalformedMessage(f"'extra' must be a JSON object, got {type(extra).__name__}")
    else:
        extra = dict(extra)
    if not extra.get("task_id"):
        extra["task_id"] = uuid7()
        extra["is_auto_fill_extra"] = True
    if "publish_time" not in extra:
        now = time.time()
        extra["publish_time"] = round(now, 4)
        extra["publish_time_format"] = format_time(now)
    kwargs = {k: v for k, v in obj.items() if k != EXTRA}
    return DecodedMessage(kwargs=kwargs, extra=extra, full={**kwargs, EXTRA: extra})
