"""Malformed message bodies and how to recognise each one again in the dead-letter queue."""
from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any, Iterator, Union

Body = Union[str, bytes]


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def malformed_bodies(count: int, large_payload_bytes: int) -> Iterator[tuple[str, Body]]:
    """``count`` malformed bodies, (label, body), cycling through every kind of bad input; the large and
    deeply nested ones are a handful whatever the count (they cost time, not coverage)."""
    cheap = [
        ("not JSON", lambda n: f"this is not json #{n} {{"),
        ("empty body", lambda n: ""),
        ("JSON array", lambda n: json.dumps([n, 2, 3])),
        ("JSON string", lambda n: json.dumps(f"just a string {n}")),
        ("JSON null", lambda n: "null"),
        ("invalid UTF-8", lambda n: b"\xff\xfe{\"i\": %d}\xc3" % n),
        ("wrong argument name", lambda n: json.dumps({"nope": n})),
        ("wrong argument type", lambda n: json.dumps({"i": f"not an int {n}"})),
        ("extra not an object", lambda n: json.dumps({"i": n, "extra": "not an object"})),
        ("truncated JSON", lambda n: json.dumps({"i": n, "s": "x" * 50})[:-7]),
    ]
    expensive = [
        ("large payload", lambda n: json.dumps({"i": n, "pad": "x" * large_payload_bytes})),
        ("large non-JSON", lambda n: "<" * large_payload_bytes),
        ("nested arrays 100000 deep", lambda n: deep_array(100_000)),
        ("nested objects 2000 deep", lambda n: deep_object(2_000)),
    ]
    for label, make in expensive:
        yield label, make(0)
    for n in range(max(0, count - len(expensive))):
        label, make = cheap[n % len(cheap)]
        yield label, make(n)


def identity(body: Any) -> str:
    """What must survive dead-lettering: the JSON object without its ``extra``, or the raw text/bytes."""
    if isinstance(body, dict):
        obj: Any = body
    else:
        raw = body
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            if isinstance(raw, bytes):
                try:
                    return "text:" + raw.decode("utf-8")
                except UnicodeDecodeError:
                    return "b64:" + base64.b64encode(raw).decode()
            return "text:" + raw
    obj = {k: v for k, v in obj.items() if k != "extra"}
    return "obj:" + json.dumps(obj, sort_keys=True)


def dead_letter_identity(dead: dict) -> str:
    """The identity of a message read back from ``<queue>_dlx`` (see annotate_dead_letter's wrapping)."""
    if set(dead) == {"raw_body", "extra"}:
        return "text:" + dead["raw_body"]
    if set(dead) == {"raw_body_base64", "extra"}:
        return "b64:" + dead["raw_body_base64"]
    return identity(dead)


def expected_identities(bodies: list[Body]) -> Counter:
    return Counter(identity(b) for b in bodies)
