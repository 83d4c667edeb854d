"""Request validation shared by every route: a value of the wrong type or out of range is a
:class:`RequestError` (a 4xx answer with a message, JSON on the API), never a 500.

Values come from a JSON body (any JSON type), a form (text, or a list of texts when a field repeats) or a
query string (text); each helper takes ``src`` (a dict or Starlette's query parameters) and a field name.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from typing import Any, Optional

NONE_WORDS = ("none", "off", "unlimited")


class RequestError(Exception):
    """A request that cannot be carried out as sent: ``status`` (400, 404, 409, 503) and a message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _get(src: Any, key: str) -> Any:
    return src.get(key) if hasattr(src, "get") else None


def text(src: Any, key: str, default: Optional[str] = None, *, required: bool = False) -> Optional[str]:
    """A text field; absent, null or empty gives ``default`` (or a 400 when ``required``)."""
    v = _get(src, key)
    if v is None or v == "":
        if required:
            raise RequestError(f"{key} is required")
        return default
    if not isinstance(v, str):
        raise RequestError(f"{key} must be text, got {_kind(v)}")
    return v


def required_text(src: Any, key: str) -> str:
    """A text field that must be there and not empty."""
    v = text(src, key)
    if v is None:
        raise RequestError(f"{key} is required")
    return v


def whole(src: Any, key: str, default: Optional[int] = None, *, minimum: Optional[int] = None,
          maximum: Optional[int] = None, clamp: bool = False) -> Optional[int]:
    """A whole number (a JSON integer, an integral float or its text); absent / null / empty gives
    ``default``. Below ``minimum`` is a 400; above ``maximum`` is a 400, or ``maximum`` with ``clamp``."""
    v = _get(src, key)
    if v is None or v == "":
        return default
    n = as_whole(v, key)
    if minimum is not None and n < minimum:
        raise RequestError(f"{key} must be >= {minimum}, got {n}")
    if maximum is not None and n > maximum:
        if not clamp:
            raise RequestError(f"{key} must be <= {maximum}, got {n}")
        n = maximum
    return n


def as_whole(v: Any, what: str) -> int:
    # bool is an int in Python, but true is not a count
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", v):
        return int(v)
    raise RequestError(f"{what} must be a whole number, got {_show(v)}")


def finite(src: Any, key: str, default: Optional[float] = None, *, minimum: Optional[float] = None) -> Optional[float]:
    """A finite number (JSON number or its text); NaN and infinity are refused (a 400)."""
    v = _get(src, key)
    if v is None or v == "":
        return default
    x = as_finite(v, key)
    if minimum is not None and x < minimum:
        raise RequestError(f"{key} must be >= {minimum:g}, got {x:g}")
    return x


def as_finite(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            raise RequestError(f"{what} must be a number, got {_show(v)}") from None
    else:
        raise RequestError(f"{what} must be a number, got {_show(v)}")
    if not math.isfinite(x):
        raise RequestError(f"{what} must be a finite number, got {_show(v)}")
    return x


def time_value(src: Any, key: str) -> Optional[float]:
    """A point in time: epoch seconds or an ISO-8601 time (search filters only)."""
    v = _get(src, key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        return as_finite(v, key)
    try:
        return as_finite(v, key)
    except RequestError:
        pass
    try:
        return _dt.datetime.fromisoformat(v.strip()).timestamp()
    except ValueError:
        raise RequestError(f"{key}: not a number or an ISO time: {_show(v)}") from None


def qps(v: Any) -> Optional[float]:
    """A queue's rate: a finite number >= 0 or its text, or null / "" / "none" (no limit); 0 means no limit
    too. Dates, booleans, NaN and infinity are refused."""
    if v is None or (isinstance(v, str) and v.strip().lower() in ("",) + NONE_WORDS):
        return None
    x = as_finite(v, "qps")
    if x < 0:
        raise RequestError(f"qps must be >= 0 (0 or none: no limit), got {_show(v)}")
    return x or None


def concurrency(v: Any) -> int:
    """A worker count: a whole number >= 1 (2.7 is refused, not truncated)."""
    if v is None or v == "":
        raise RequestError("concurrency needs a value: a whole number >= 1")
    n = as_whole(v, "concurrency")
    if n < 1:
        raise RequestError(f"concurrency must be >= 1, got {n}")
    return n


def text_list(src: Any, key: str) -> Optional[list[str]]:
    """A list of texts: a JSON list of strings, a form field given several times, or one text of items
    separated by commas / spaces. Absent or empty gives None."""
    v = _get(src, key)
    if v is None or v == "":
        return None
    if isinstance(v, str):
        items = v.replace(",", " ").split()
    elif isinstance(v, list) and all(isinstance(i, str) for i in v):
        items = [i.strip() for i in v if i.strip()]
    else:
        raise RequestError(f"{key} must be a list of texts (or one text, comma-separated), got {_show(v)}")
    return items or None


def json_object(src: Any, key: str, default: Optional[dict] = None) -> Optional[dict]:
    """A JSON object, sent as an object or as the text of one (a form field)."""
    v = _get(src, key)
    if v is None or v == "":
        return default
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except (ValueError, RecursionError) as exc:
            raise RequestError(f"{key} is not valid JSON: {exc}") from None
    if not isinstance(v, dict):
        raise RequestError(f"{key} must be a JSON object, got {_kind(v)}")
    return v


def local_path(v: Any, default: str) -> str:
    """A redirect target of this site: a path starting with one "/" (never "//host" or "/\\host", which
    browsers treat as another site)."""
    if isinstance(v, str) and v.startswith("/") and not v.startswith(("//", "/\\")) and "\\" not in v[:3]:
        return v
    return default


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
