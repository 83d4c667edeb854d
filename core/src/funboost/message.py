"""The message envelope, compatible with the original funboost's wire format.

A message is a JSON object: the function's keyword arguments at the top level plus one reserved key,
``extra``, holding ``task_id`` (UUIDv7), ``publish_time`` (epoch seconds, 4 decimals),
``publish_time_format`` and any per-message TaskOptions. A foreign message without ``extra`` is filled in.
Bytes from the wire are only ever parsed as JSON, never unpickled.
"""
from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import itertools
import json
import os
import random
import time
import uuid
from typing import Any, Optional

from funboost.eta import eta_to_timestamp
from funboost.exceptions import MalformedMessage
from funboost.utils.private_random import rng

EXTRA = "extra"

def has_non_finite_float(obj: Any) -> bool:
    """True if ``obj`` holds a float NaN or +-Infinity anywhere in its dicts, lists and tuples."""
    t = type(obj)
    if t is float:
        return not -_INF < obj < _INF  # NaN compares false both ways
    if t is dict:
        values: Any = obj.values()
    elif t is list or t is tuple:
        values = obj
    elif isinstance(obj, float):  # subclasses: the slow path
        return not -_INF < obj < _INF
    elif isinstance(obj, dict):
        values = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return False
    for v in values:  # one level inline: most values are scalars
        tv = type(v)
        if tv is float:
            if not -_INF < v < _INF:
                return True
        elif tv is str or tv is int or v is None or tv is bool:
            continue
        elif has_non_finite_float(v):
            return True
    return False


_INF = float("inf")
# the stdlib's encoder, for what orjson cannot write exactly: integers beyond 64 bits (orjson refuses them)
# and NaN / Infinity (orjson writes null: an argument would arrive as None). It writes them as JSON numbers
# and as NaN / Infinity, which :func:`loads` reads back, as the stdlib and the original funboost do.
_std_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=lambda o: _default(o))

def _std_encode(obj: Any) -> str:
    """The stdlib encoder for a value holding an integer beyond 64 bits, with orjson's rule for dict keys:
    text only (the stdlib writes 0 as "0", which could overwrite a key "0" of the same dict)."""
    _refuse_non_text_keys(obj)
    return _std_encoder.encode(obj)


def _refuse_non_text_keys(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"Dict key must be str, got {type(k).__name__} {k!r}")
            _refuse_non_text_keys(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _refuse_non_text_keys(v)


try:  # orjson is optional; it is a good deal faster when installed
    import orjson as _orjson

    def dumps(obj: Any) -> str:
        try:
            out = _orjson.dumps(obj, default=_default)
        except _orjson.JSONEncodeError as exc:
            if "64-bit" not in str(exc):  # e.g. a dict key that is not a string: refused, never changed
                raise
            return _std_encode(obj)
        text = out.decode("utf-8")
        # "null" in the text: maybe a None, maybe a NaN orjson wrote as null (checked only then; a search of
        # the str is about twice as fast as of the bytes)
        if "null" in text and has_non_finite_float(obj):
            return _std_encoder.encode(obj)
        return text

    # orjson reads an integer outside the 64-bit range as a float (19000000000000000001 -> 1.9e19): a
    # task argument or a dead letter would change silently. Such a number has 19 digits or more; text that
    # has such a digit run (rare: also long ids inside strings) is read again with the exact stdlib parser.
    # The run is found on the UTF-8 bytes with every ASCII digit mapped to "0" and every other byte to "."
    # (JSON numbers have ASCII digits only): two C passes, ~6x faster than a regex search on every message.
    _DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
    _LONG_RUN = b"0" * 19

    def _has_long_digit_run(data: bytes) -> bool:
        return _LONG_RUN in data.translate(_DIGIT_MAP)

    def loads(data: Any) -> Any:
        try:
            obj = _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # NaN / Infinity (what dumps writes for them, and the stdlib and the original funboost too) are
            # read by the stdlib parser; anything else keeps orjson's error (and its nesting limit: the
            # stdlib parser of Python 3.13 would take 2,000 levels)
            raw = data if isinstance(data, (str, bytes, bytearray)) else bytes(data)
            if not (("NaN" in raw or "Infinity" in raw) if isinstance(raw, str) else
                    (b"NaN" in raw or b"Infinity" in raw)):
                raise
            return json.loads(raw)
        # the guard inlined (_has_long_digit_run): loads runs once per consumed message
        raw = data.encode("utf-8", "surrogatepass") if type(data) is str else bytes(data)
        return json.loads(raw) if _LONG_RUN in raw.translate(_DIGIT_MAP) else obj
    def json_copy(obj: Any) -> Any:
        """``loads(dumps(obj))`` (what any broker delivers of ``obj``, ``TypeError`` for what JSON cannot
        hold) in one orjson round trip on bytes where that is exact; the general pair otherwise."""
        try:
            out = _orjson.dumps(obj, default=_default)
        except _orjson.JSONEncodeError as exc:
            if "64-bit" not in str(exc):
                raise
            return loads(dumps(obj))
        if (b"null" in out and has_non_finite_float(obj)) or _LONG_RUN in out.translate(_DIGIT_MAP):
            return loads(dumps(obj))
        return _orjson.loads(out)
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]  # the name stays defined; every use above is under the try

    def dumps(obj: Any) -> str:
        return _std_encode(obj)

    loads = json.loads  # type: ignore[assignment]  # the same contract: text or bytes in, the object out

    def json_copy(obj: Any) -> Any:
        return loads(dumps(obj))


# values a JSON round trip gives back unchanged (and which nothing can change under the consumer): ints and
# floats of any size or value (dumps / loads keep big ints and NaN exactly), bools, None; ASCII text
_JSON_SCALARS = frozenset((int, float, bool, type(None)))


def envelope_copy(env: dict) -> dict:
    """What :func:`json_copy` gives of an envelope, without encoding when every argument is a plain value
    (one level of dict, ``extra``, included): a ~1 us shortcut per message of the in-process brokers, whose
    usual arguments are numbers and short text. Anything else (lists, nested dicts, non-ASCII text, which may
    hold lone surrogates JSON refuses, other types) takes the full round trip and its checks."""
    out = {}
    scalars = _JSON_SCALARS
    for k, v in env.items():
        t = type(v)
        if t is str:
            if not v.isascii():
                return json_copy(env)
        elif t is dict:
            for k2, v2 in v.items():
                t2 = type(v2)
                if type(k2) is not str or (t2 is str and not v2.isascii()) or (t2 is not str and t2 not in scalars):
                    return json_copy(env)
            v = v.copy()
        elif t not in scalars:
            return json_copy(env)
        if type(k) is not str:
            return json_copy(env)
        out[k] = v
    return out


def _default(obj: Any) -> Any:
    # called per value JSON does not know (e.g. every DECIMAL column of a CDC row): no imports in here
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _decimal.Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"argument of type {type(obj).__name__} is not JSON serializable: {obj!r}")


_uuid7_counter = itertools.count()
_uuid7_prefix: list = [(0, "")]  # (unix ms, "tttttttt-tttt-7"), swapped as one tuple: no lock needed


def uuid7() -> str:
    """A UUIDv7 string (RFC 9562): 48-bit unix milliseconds, a 12-bit per-process counter (ids made in
    the same millisecond by one process sort in creation order, except across the counter's wrap every
    4096 ids), then 62 random bits that keep ids unique across processes and hosts. No lock: the
    counter's ``next`` is atomic and the time prefix is formatted once per millisecond."""
    ms = time.time_ns() // 1_000_000
    cached = _uuid7_prefix[0]
    if cached[0] != ms:
        cached = _uuid7_prefix[0] = (ms, "%08x-%04x-7" % (ms >> 16 & 0xFFFFFFFF, ms & 0xFFFF))
    # counter, variant bits and 62 random bits as one 80-bit number, hexed in one call (a third cheaper
    # than formatting three fields): "0" + 3 counter digits + 4 (variant, 14 bits) + 12
    h = ((next(_uuid7_counter) & 0xFFF) << 64 | 0x8000000000000000 | _rand(62)).to_bytes(10, "big").hex()
    return f"{cached[1]}{h[1:4]}-{h[4:8]}-{h[8:]}"


def uuid7_time(task_id: str) -> Optional[float]:
    """The creation time (epoch seconds) of a task id made by :func:`uuid7`; None for any other id."""
    if len(task_id) != 36 or task_id[14] != "7" or task_id[8] != "-" or task_id[13] != "-":
        return None
    try:
        return int(task_id[:8] + task_id[9:13], 16) / 1000
    except ValueError:
        return None


_rand = random.SystemRandom().getrandbits if os.environ.get("FUNBOOST_SECURE_IDS") == "1" else rng.getrandbits


_fmt_cache: list = [0, ""]


def format_time(ts: float) -> str:
    sec = int(ts)
    if _fmt_cache[0] != sec:  # one strftime per second, not per message
        _fmt_cache[1] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
        _fmt_cache[0] = sec
    return _fmt_cache[1]


def _four_decimals(ts: float) -> float:
    """``ts`` cut to 0.1 ms: the envelope's ``publish_time`` (as the original funboost writes it), at a
    quarter of ``round(ts, 4)``'s cost."""
    return int(ts * 10000) / 10000


def build_envelope(kwargs: dict, task_id: Optional[str] = None, extra_options: Optional[dict] = None,
                   publish_time: Optional[float] = None) -> dict:
    """A new envelope dict; ``kwargs`` is copied, never mutated."""
    msg = seal_envelope(dict(kwargs), task_id, publish_time)
    if extra_options:
        extra = msg[EXTRA]
        for k, v in extra_options.items():
            if k in ("task_id", "publish_time", "publish_time_format") and v is None:
                continue
            extra[k] = v
    return msg


def seal_envelope(kwargs: dict, task_id: Optional[str] = None, publish_time: Optional[float] = None) -> dict:
    """The envelope made of ``kwargs`` itself (its ``extra`` added, nothing copied): for a dict the caller
    built for this message alone (``push``'s arguments); :func:`build_envelope` copies first."""
    now = time.time() if publish_time is None else publish_time
    kwargs[EXTRA] = {"task_id": task_id or uuid7(), "publish_time": _four_decimals(now),
                     "publish_time_format": format_time(now)}
    return kwargs


# the keys every decoded ``extra`` has (decode fills in the first two; the third comes with the second)
BASE_EXTRA_KEYS = ("task_id", "publish_time", "publish_time_format")


class DecodedMessage:
    """A message taken from the broker, decoded and checked: ``kwargs`` (the function's arguments),
    ``extra`` (task id, publish time, per-message options) and ``full`` (the whole envelope).

    ``has_options``: ``extra`` carries anything besides :data:`BASE_EXTRA_KEYS`, i.e. per-message options
    (expiry, eta / countdown, filtering, retries, timeout, rpc...) or engine counters. A message without
    any runs with its queue's settings alone, which the engine works out once per queue rather than per
    message. (``task_id`` and ``publish_time`` are always there after :func:`decode`: two checks suffice.)"""

    __slots__ = ("kwargs", "extra", "full", "has_options")

    def __init__(self, kwargs: dict, extra: dict, full: dict) -> None:
        self.kwargs = kwargs
        self.extra = extra
        self.full = full
        self.has_options = len(extra) != 3 or "publish_time_format" not in extra

    @property
    def task_id(self) -> str:
        return self.extra["task_id"]

    def __repr__(self) -> str:
        return f"DecodedMessage(kwargs={self.kwargs!r}, extra={self.extra!r})"


def decode(body: Any) -> DecodedMessage:
    """Parse a broker body (str/bytes JSON, or a dict from an in-process broker) into a DecodedMessage.
    Raises MalformedMessage with the reason; never returns a half-filled message."""
    if isinstance(body, dict):
        obj = body
    else:
        if type(body) is str:  # the common case: JSON text, nothing more to check
            pass
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, str):
            raise MalformedMessage(f"message body has type {type(body).__name__}, expected JSON text")
        try:
            obj = loads(body)
        except (ValueError, TypeError, RecursionError) as exc:  # orjson: ValueError past 1024 levels
            preview = body[:200] if isinstance(body, (str, bytes)) else body
            raise MalformedMessage(f"message is not valid JSON ({exc}): {preview!r}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"message must be a JSON object, got {type(obj).__name__}")
    # obj is ours (freshly parsed, or the envelope an in-process broker kept): fill ``extra`` in place
    # and copy once for the kwargs; ``full`` is obj itself
    extra = obj.get(EXTRA)
    if extra is None:
        extra = obj[EXTRA] = {}
    elif not isinstance(extra, dict):
        raise MalformedMessage(f"'extra' must be a JSON object, got {type(extra).__name__}")
    task_id = extra.get("task_id")
    if not task_id:
        extra["task_id"] = uuid7()
        extra["is_auto_fill_extra"] = True
    elif type(task_id) is not str:
        extra["task_id"] = _task_id_text(task_id)
    publish_time = extra.get("publish_time")
    if publish_time is None:
        now = time.time()
        extra["publish_time"] = _four_decimals(now)
        extra["publish_time_format"] = format_time(now)
    elif type(publish_time) is not float and type(publish_time) is not int:
        extra["publish_time"] = _option_number(extra, "publish_time")
    kwargs = obj.copy()
    del kwargs[EXTRA]
    msg = DecodedMessage(kwargs, extra, obj)
    if msg.has_options:
        check_options(extra)
    return msg


def _task_id_text(task_id: Any) -> str:
    # another language's client may send a number; a structure cannot name a task
    if type(task_id) is int:
        return str(task_id)
    raise MalformedMessage(f"'extra.task_id' must be a string, got {type(task_id).__name__}: {task_id!r}")


def _option_number(extra: dict, key: str, minimum: Optional[float] = None, integer: bool = False) -> Any:
    """``extra[key]`` as a number (a numeric string is converted, as pydantic would); MalformedMessage for
    anything else, so that the engine never meets a per-message option it cannot use."""
    value = extra[key]
    if type(value) is bool:
        number: Any = None
    elif type(value) is int or type(value) is float:
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    else:
        number = None
    if type(number) is float:
        if not -_INF < number < _INF:  # NaN, Infinity
            number = None
        elif integer:
            number = int(number) if number.is_integer() else None
    if number is None or (minimum is not None and number < minimum):
        what = "an integer" if integer else "a number"
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise MalformedMessage(f"'extra.{key}' must be {what}{bound}, got {value!r}")
    return number


# per-message options the engine reads, by the type it needs: (minimum, integer) for numbers
_NUMBER_OPTIONS = {"function_timeout": (0, False), "msg_expire_seconds": (0, False), "countdown": (None, False),
                   "misfire_grace_time": (0, False), "max_retry_times": (0, True), "priority": (None, True),
                   "_advanced_retry_count": (0, True), "_requeue_count": (0, True)}
_BOOL_OPTIONS = ("is_print_detail_exception", "is_using_rpc_mode", "do_task_filtering")
_TEXT_OPTIONS = ("filter_str", "key")


def check_options(extra: dict) -> None:
    """Check (and normalise in place) the per-message options of a decoded ``extra``: numbers may come as
    numeric text, flags as booleans or 0 / 1, an ``eta`` as epoch seconds or ISO text. A message with an
    option of the wrong type raises :class:`MalformedMessage` (the consumer dead-letters it with the
    reason) instead of failing inside the engine, again on every redelivery."""
    for key, (minimum, integer) in _NUMBER_OPTIONS.items():
        if extra.get(key) is not None:
            extra[key] = _option_number(extra, key, minimum, integer)
    for key in _BOOL_OPTIONS:
        value = extra.get(key)
        if value is not None and type(value) is not bool:
            if type(value) is int and value in (0, 1):
                extra[key] = bool(value)
            else:
                raise MalformedMessage(f"'extra.{key}' must be true or false, got {value!r}")
    for key in _TEXT_OPTIONS:
        value = extra.get(key)
        if value is not None and not isinstance(value, str):
            raise MalformedMessage(f"'extra.{key}' must be a string, got {value!r}")
    eta = extra.get("eta")
    if eta is not None:
        try:
            eta_to_timestamp(eta)
        except ValueError as exc:
            raise MalformedMessage(f"'extra.eta': {exc} (epoch seconds or ISO-8601 text)") from None
