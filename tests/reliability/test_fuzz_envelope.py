"""Hypothesis fuzz of the envelope decoder (funboost.message.decode) and of annotate_dead_letter: whatever
bytes or text a broker hands over, decode returns a checked message or raises MalformedMessage (nothing
else), and annotate_dead_letter returns UTF-8 JSON text that keeps the whole body and a reason."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from funboost.exceptions import MalformedMessage  # noqa: E402
from funboost.message import decode  # noqa: E402
from funboost.plugins.broker import annotate_dead_letter  # noqa: E402

from .malformed import deep_array, deep_object  # noqa: E402
from .sizes import SIZE  # noqa: E402

FUZZ = settings(max_examples=SIZE.fuzz_examples, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@st.composite
def nested(draw: Any) -> str:
    """JSON nested from a few levels up to far past any parser's limit, arrays or objects, well formed or cut."""
    depth = draw(st.sampled_from([1, 10, 254, 255, 256, 1000, 1023, 1024, 1025, 2000, 100_000]))
    text = draw(st.sampled_from([deep_array, deep_object]))(depth)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


envelope_like = st.dictionaries(st.text(max_size=10), json_values, max_size=5).flatmap(
    lambda d: st.sampled_from([d, {**d, "extra": {"task_id": "t"}}, {**d, "extra": "nope"}, {**d, "extra": None},
                               {**d, "extra": [1]}]))

bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),  # includes lone surrogates: brokers may hand over such a str
    json_values.map(json.dumps),
    envelope_like.map(json.dumps),
    envelope_like.map(lambda d: json.dumps(d).encode("utf-8")),
    nested(),
    nested().map(str.encode),
)


def _check_decode(body: Any) -> None:
    try:
        msg = decode(body)
    except MalformedMessage as exc:
        assert str(exc), "MalformedMessage without a reason"
        return
    assert isinstance(msg.kwargs, dict) and isinstance(msg.extra, dict)
    assert msg.task_id and "extra" not in msg.kwargs
    assert "publish_time" in msg.extra


@FUZZ
@given(bodies)
def test_decode_raises_only_malformed_message(body: Any) -> None:
    _check_decode(body)


@FUZZ
@given(envelope_like)
def test_decode_of_dict_bodies(body: dict) -> None:  # in-process brokers hand over the envelope dict
    _check_decode(body)


def _original_identity(body: Any) -> Any:
    """What a dead letter must keep of ``body``: the object without ``extra``, else the raw bytes."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k != "extra"}
    return raw


def _dead_letter_identity(dead: dict) -> Any:
    if set(dead) == {"raw_body", "extra"}:
        return dead["raw_body"].encode("utf-8")
    if set(dead) == {"raw_body_base64", "extra"}:
        return base64.b64decode(dead["raw_body_base64"])
    return {k: v for k, v in dead.items() if k != "extra"}


@FUZZ
@given(bodies, st.text(min_size=1, max_size=50))
def test_annotate_dead_letter_keeps_the_body_and_the_reason(body: Any, reason: str) -> None:
    text = annotate_dead_letter(body, reason)
    assert isinstance(text, str)
    text.encode("utf-8")  # every broker can carry it
    dead = json.loads(text)
    assert dead["extra"]["dead_letter_reason"] == reason
    decode(text)  # a dead letter is itself a well-formed envelope (a consumer of <queue>_dlx reads it)
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    # an object kept as an object, or (one too deep to be written back whole) the raw bytes, never less
    assert _dead_letter_identity(dead) in (_original_identity(body), raw)


@FUZZ
@given(envelope_like, st.text(min_size=1, max_size=50))
def test_annotate_dead_letter_of_dict_bodies(body: dict, reason: str) -> None:
    dead = json.loads(annotate_dead_letter(body, reason))
    assert dead["extra"]["dead_letter_reason"] == reason
    assert {k: v for k, v in dead.items() if k != "extra"} == {k: v for k, v in body.items() if k != "extra"}
    if isinstance(body.get("extra"), dict):
        assert {**body["extra"], **dead["extra"]} == dead["extra"]
    elif body.get("extra") is not None:
        assert dead["extra"]["invalid_extra"] == body["extra"]
