"""Issue 19 item 7: a malformed message is never dropped while the log says it was dead-lettered.
(The reliability suite, tests/reliability, runs the same bodies through real brokers.)"""
from __future__ import annotations

import base64
import json
import logging

import pytest

import funboost.message
from funboost import BoosterParams, boost
from funboost.brokers.memory import MemoryBroker
from funboost.exceptions import MalformedMessage
from funboost.message import decode
from funboost.plugins.broker import OutgoingMessage, annotate_dead_letter
from funboost.testing import wait_until

DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 2_000 + "1" + "}" * 2_000


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, DEEP_ARRAY.encode()], ids=["array", "object", "bytes"])
def test_too_deep_for_the_parser_is_wrapped_whole(body):
    with pytest.raises(MalformedMessage, match="not valid JSON"):
        decode(body)
    dead = json.loads(annotate_dead_letter(body, "too deep"))
    assert dead["raw_body"] == (body.decode() if isinstance(body, bytes) else body)
    assert dead["extra"]["dead_letter_reason"] == "too deep"


def test_bytes_that_are_not_utf8_are_kept_exactly():
    body = b'\xff\xfe{"i": 1}\xc3'
    dead = json.loads(annotate_dead_letter(body, "bad bytes"))
    assert base64.b64decode(dead["raw_body_base64"]) == body


def test_extra_that_is_not_an_object_is_kept():
    dead = json.loads(annotate_dead_letter('{"i": 1, "extra": "oops"}', "bad extra"))
    assert dead["i"] == 1 and dead["extra"]["invalid_extra"] == "oops"


def test_decode_maps_a_recursion_error_to_malformed_message(monkeypatch):
    monkeypatch.setattr(funboost.message, "loads", json.loads)  # a parser without orjson's depth limit
    with pytest.raises(MalformedMessage):
        decode(DEEP_ARRAY)


def test_moved_is_logged_only_once_the_broker_has_it(qname, monkeypatch, caplog):
    def failing_reject(self, deliveries, reason):
        raise ConnectionError("dead-letter queue unreachable")

    monkeypatch.setattr(MemoryBroker, "reject", failing_reject)

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def work(i: int) -> None:
        pass

    with caplog.at_level(logging.ERROR):
        work.consume()
        try:
            work.broker.publish([OutgoingMessage(body="not json")])
            wait_until(lambda: "dead-lettering failed" in caplog.text, 10, message="the failed reject logged")
        finally:
            work.stop_consume(5)
    assert "moved to" not in caplog.text


def test_integers_past_64_bits_stay_exact():
    """Found by the envelope fuzz (tests/reliability): orjson reads 19000000000000000001 as 1.9e19, so a dead
    letter (and a task argument) changed silently. ``funboost.message.loads`` reads such text again with the
    exact parser."""
    from funboost.message import loads

    big, small = 19000000000000000001, -9223372036854775809
    text = json.dumps({"x": big, "y": small, "z": 1.5, "extra": {"task_id": "t"}})
    assert loads(text) == {"x": big, "y": small, "z": 1.5, "extra": {"task_id": "t"}}
    assert loads(text.encode()) == loads(text)
    assert decode(text).kwargs["x"] == big
    dead = json.loads(annotate_dead_letter(text, "r"))
    assert (dead["x"], dead["y"]) == (big, small)
