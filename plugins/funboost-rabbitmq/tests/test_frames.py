"""Our basic.publish encoder (frames.py): byte for byte what pika marshals, and a real round trip."""
from __future__ import annotations

import decimal
import json
import time

import pika
import pika.frame
import pika.spec
import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost_rabbitmq import frames
from funboost_rabbitmq.connection import PublishError

from conftest import run_in_threads, wait_until


def pika_publish_bytes(channel: int, frame_max: int, exchange: str, routing_key: str, body: bytes,
                       props: pika.BasicProperties) -> bytes:
    """What pika's Connection._send_message writes for one basic_publish (method, header, body frames)."""
    body_max = frame_max - 8
    out = [pika.frame.Method(channel, pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key)).marshal(),
           pika.frame.Header(channel, len(body), props).marshal()]
    for start in range(0, len(body), body_max):
        out.append(pika.frame.Body(channel, body[start:start + body_max]).marshal())
    return b"".join(out)


PROPERTY_SETS = [
    {},
    {"content_type": "application/json"},
    {"content_type": "application/json", "delivery_mode": 2},
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "0192f7a2-1234-7abc-8def-0123456789ab"},
    {"content_type": "application/json", "delivery_mode": 1, "priority": 0, "message_id": "t1"},
    {"delivery_mode": 2, "priority": 255, "message_id": "é-ünïcode-☃"},
    {"content_type": "application/json", "delivery_mode": 2, "priority": 3, "message_id": "m",
     "headers": {"x-delay": 1500, "s": "text", "b": True, "f": False, "big": 2**40, "neg": -7,
                 "raw": b"\x00\x01", "none": None, "nested": {"k": "v", "n": 1}, "list": [1, "a", None],
                 "dec": decimal.Decimal("1.25")}},
    {"headers": {}},
    {"content_type": "text/plain", "content_encoding": "utf-8", "headers": {"a": "b"}, "delivery_mode": 2,
     "priority": 9, "correlation_id": "corr", "reply_to": "amq.rabbitmq.reply-to", "expiration": "60000",
     "message_id": "mid", "timestamp": 1_700_000_000, "type": "task", "user_id": "guest", "app_id": "funboost",
     "cluster_id": "c1"},
    {"timestamp": 0, "app_id": ""},
]


@pytest.mark.parametrize("props", PROPERTY_SETS)
def test_properties_match_pika(props):
    expected = b"".join(pika.spec.BasicProperties(**props).encode())
    assert frames.encode_properties(**props) == expected


@pytest.mark.parametrize("priority", [None, 0, 7])
@pytest.mark.parametrize("message_id", [None, "", "0192f7a2-1234-7abc-8def-0123456789ab", "ü"])
@pytest.mark.parametrize("headers", [None, {"x-delay": 10}, {"x-funboost-dead-letter-reason": "boom"}])
@pytest.mark.parametrize("delivery_mode", [1, 2])
def test_fixed_properties_match_pika(priority, message_id, headers, delivery_mode):
    fixed = frames.FixedProperties("application/json", delivery_mode)
    for _ in range(2):  # the second call comes from the prefix cache
        got = fixed.encode(priority, message_id, headers)
        expected = b"".join(pika.spec.BasicProperties(
            content_type="application/json", delivery_mode=delivery_mode, priority=priority,
            message_id=message_id, headers=headers).encode())
        assert got == expected


@pytest.mark.parametrize("channel", [1, 7, 65535])
@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_batch_frames_match_pika(channel, frame_max):
    body_max = frame_max - 8
    bodies = [b"", b"x", b'{"x": 1}', b"y" * body_max, b"z" * (body_max + 1), bytes(range(256)) * 40,
              "ünïcode ☃".encode("utf-8")]
    routes = [("", "q"), ("ex.topic", "a.b.c"), ("", "q"), ("éx", "ünï")]
    messages, expected = [], []
    for i, body in enumerate(bodies):
        exchange, key = routes[i % len(routes)]
        props = PROPERTY_SETS[i % len(PROPERTY_SETS)]
        messages.append((exchange, key, body, frames.encode_properties(**props)))
        expected.append(pika_publish_bytes(channel, frame_max, exchange, key, body,
                                           pika.spec.BasicProperties(**props)))
    encoder = frames.PublishFrames(channel, frame_max)
    assert encoder.encode(messages) == b"".join(expected)
    # a subset, in the given order (retries send only the unconfirmed ones)
    assert encoder.encode(messages, [5, 1, 3]) == expected[5] + expected[1] + expected[3]


def test_short_strings_are_limited_to_255_bytes():
    assert frames.shortstr("a" * 255)[0] == 255
    with pytest.raises(ValueError):
        frames.shortstr("a" * 256)
    with pytest.raises(ValueError):
        frames.FixedProperties("application/json", 2).encode(None, "é" * 128)


# ---------------------------------------------------------------- through a real RabbitMQ
def _get_all(url: str, queue: str, n: int, timeout: float = 10.0) -> list:
    """basic_get with raw pika: (properties, body) of n messages, acked."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.02)
                continue
            out.append((props, body))
        return out
    finally:
        conn.close()


def test_round_trip_bodies_priorities_headers(make_broker, queue_name, rabbitmq_url):
    """A batch encoded by us, consumed by pika: every property and body arrives as sent (bodies larger
    than frame_max are split into several body frames)."""
    b = make_broker(queue_name, max_priority=9, headers_for_publish={"app": "bench", "n": 3})
    big = json.dumps({"x": "b" * 300_000})  # > frame_max (131072): several body frames
    sent = [OutgoingMessage(body=json.dumps({"x": i, "s": "ü" * i}), task_id=f"id-{i}", priority=i % 10,
                            headers={"h": f"v{i}"} if i % 2 else {}) for i in range(40)]
    sent.append(OutgoingMessage(body=big, task_id="big", priority=9))
    sent.append(OutgoingMessage(body="", task_id="", priority=None))
    b.publish(sent)
    got = _get_all(rabbitmq_url, queue_name, len(sent))
    assert len(got) == len(sent)
    # a priority queue hands out higher priorities first: compare by body
    by_body = {body: props for props, body in got}
    assert len(by_body) == len(sent)
    for m in sent:
        props = by_body[m.body.encode("utf-8")]
        assert props.content_type == "application/json" and props.delivery_mode == 2
        assert props.message_id == (m.task_id or None)
        assert props.priority == m.priority
        expected_headers = {"app": "bench", "n": 3, **m.headers}
        assert props.headers == expected_headers
    # everything was confirmed before the first get, so the priority queue hands them out by priority
    assert [props.priority or 0 for props, _ in got] == sorted((m.priority or 0 for m in sent), reverse=True)


def test_concurrent_batches_are_each_confirmed(make_broker, queue_name, rabbitmq_url):
    """Several threads publish batches on the shared connection: the delivery tags we count must match
    the server's, or a batch would return early (lost) or never (timeout)."""
    b = make_broker(queue_name)

    def work(k: int) -> None:
        for j in range(10):
            b.publish([OutgoingMessage(body=json.dumps({"x": [k, j, i]}), task_id=f"{k}-{j}-{i}")
                       for i in range(1 + (k * 7 + j) % 60)])
            # everything this thread published so far is stored: its confirms were for its own tags

    run_in_threads(work, 6)
    total = sum(1 + (k * 7 + j) % 60 for k in range(6) for j in range(10))
    assert b.queue_size().ready == total
    ids = {p.message_id for p, _ in _get_all(rabbitmq_url, queue_name, total)}
    assert len(ids) == total


def test_nacked_batch_raises_a_clear_error(make_broker, queue_name):
    """x-overflow=reject-publish makes the server nack what does not fit: the publish retries (with
    backoff) and then raises, saying it was nacked; what fit is stored."""
    b = make_broker(queue_name, publish_timeout=1.5,
                    queue_arguments={"x-max-length": 5, "x-overflow": "reject-publish"})
    with pytest.raises(PublishError, match="nacked"):
        b.publish([OutgoingMessage(body=json.dumps({"x": i}), task_id=f"t{i}") for i in range(8)])
    wait_until(lambda: b.queue_size().ready == 5, 5, message="the 5 that fit are stored")
