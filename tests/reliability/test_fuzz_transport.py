"""Transport frame fuzzing (issue 19, item 4: "the transport frame parsers are fuzzed"): the funboost-tcp
and funboost-http consumer servers get malformed, truncated and oversized frames and random bytes from a
seeded generator (the seed is printed; ``FUNBOOST_FUZZ_SEED=<n>`` replays a run). Each case goes on a
connection of its own, which the fuzzer half-closes after sending.

Per case: every reply is a well-formed frame / HTTP response, never an INTERNAL error or a 5xx other than
503 (backpressure), and the server closes the connection within seconds (no hang). Every 50 cases, and at
the end, a real client publishes and reads the queue size: the server keeps serving. At the end no
connection is left open on the server.
"""
from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
from typing import Any, Callable

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import wait_until
from funboost.testing.servers import free_port

from .report import record
from .sizes import SIZE

TOKEN = "fuzz-token-" + "k" * 20
ENVELOPE = {"i": 1, "extra": {"task_id": "fuzz-ok"}}


def seed() -> int:
    return int(os.environ.get("FUNBOOST_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 64), rng.randrange(-1000, 1000)])
    if choice == 3:
        return rng.choice([0.0, -0.5, 1e308, 3.25, 1e-9])
    if choice == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 30)))
    if choice == 5:
        return rng.choice(["", "q", TOKEN, "\u0000", "x" * 300])
    if choice == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if choice == 7:
        return {rng.choice(["i", "extra", "task_id", "x", "", "queue", "token"]): random_json(rng, depth + 1)
                for _ in range(rng.randrange(0, 4))}
    return dict(ENVELOPE, extra=random_json(rng, depth + 1)) if rng.random() < 0.5 else dict(ENVELOPE)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, cut, duplicate or insert bytes."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    b = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(4)
        pos = rng.randrange(len(b) or 1)
        if op == 0 and b:
            b[pos] = rng.randrange(256)
        elif op == 1:
            del b[pos:pos + rng.randrange(1, 10)]
        elif op == 2:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 10)))
        else:
            b[pos:pos] = b[pos:pos + rng.randrange(1, 50)]
    return bytes(b)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, read everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the server closed first (it may refuse mid-send): what it answered is still read
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError(f"the server neither answered nor closed within {timeout}s") from None
            if not chunk:
                break
            chunks.append(chunk)
            assert time.monotonic() < deadline, f"the server kept the connection open past {timeout}s"
        return b"".join(chunks)


# ---------------------------------------------------------------------------------------------- tcp

def tcp_case(rng: random.Random, queue: str) -> bytes:
    from funboost_tcp import protocol as p

    def request() -> bytes:
        obj: dict = {}
        if rng.random() < 0.8:
            obj["token"] = TOKEN if rng.random() < 0.6 else random_json(rng)
        if rng.random() < 0.8:
            obj["queue"] = queue if rng.random() < 0.6 else random_json(rng)
        kind = rng.choice([p.PUBLISH, p.STATS, p.PURGE, p.PING, p.CALL, 0, 6, 127, 128, 129, 255])
        if kind == p.PUBLISH or rng.random() < 0.2:
            obj["bodies"] = ([random_json(rng) for _ in range(rng.randrange(0, 5))] if rng.random() < 0.8
                             else random_json(rng))
        if kind == p.CALL:
            # a call that parses waits for a consumer; a short timeout keeps it from holding a thread
            obj["body"] = random_json(rng)
            obj["timeout"] = 0.05
        payload = json.dumps(obj).encode() if rng.random() < 0.8 else mutate(rng, json.dumps(obj).encode())
        return p.HEADER.pack(len(payload), rng.randrange(1 << 32), kind) + payload

    shape = rng.randrange(6)
    if shape == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
    if shape == 1:  # pipelined requests, well-formed headers
        return b"".join(request() for _ in range(rng.randrange(1, 6)))
    if shape == 2:  # a frame cut short (header or payload)
        data = request()
        return data[:rng.randrange(0, len(data))]
    if shape == 3:  # a length that does not match the payload
        data = request()
        length = rng.choice([0, 1, len(data), 2 ** 32 - 1, rng.randrange(1 << 20)])
        return struct.pack(">I", length) + data[4:]
    if shape == 4:  # larger than max_frame_bytes, with or without the bytes
        payload = b"{" + b" " * (70 * 1024) + b"}"
        data = p.HEADER.pack(len(payload), 7, p.PUBLISH) + (payload if rng.random() < 0.5 else payload[:100])
        return data + (request() if rng.random() < 0.5 else b"")
    return mutate(rng, b"".join(request() for _ in range(rng.randrange(1, 3))))


def check_tcp_replies(data: bytes) -> None:
    from funboost_tcp import protocol as p

    pos = 0
    while pos < len(data):
        assert len(data) - pos >= p.HEADER_SIZE, f"a reply cut short: {data[pos:]!r}"
        length, _rid, frame_type = p.HEADER.unpack_from(data, pos)
        body = data[pos + p.HEADER_SIZE:pos + p.HEADER_SIZE + length]
        assert len(body) == length, "a reply shorter than its header says"
        assert frame_type in (p.OK, p.ERROR), f"reply of type {frame_type}"
        obj = json.loads(body) if body else None
        if frame_type == p.ERROR:
            assert obj["code"] in p.ERROR_CODES and obj["code"] != p.INTERNAL, obj
            assert obj["message"], obj
        pos += p.HEADER_SIZE + length


# ---------------------------------------------------------------------------------------------- http

def http_case(rng: random.Random, queue: str) -> bytes:
    method = rng.choice([b"GET", b"POST", b"DELETE", b"PUT", b"HEAD", b"PATCH", b"OPTIONS", b"G\x00T", b""])
    path = rng.choice([f"/queues/{queue}/messages", f"/queues/{queue}/call?timeout=0.05", f"/queues/{queue}",
                       "/healthz", "/queues//messages", "/queues/%ZZ/messages", "/" + "a/" * 200, "*",
                       f"/queues/{queue}/messages/x", "/queues/\u00e9/call?timeout=abc"]).encode("utf-8")
    if rng.random() < 0.1:
        path = mutate(rng, path)
    body = json.dumps(random_json(rng)).encode()
    if rng.random() < 0.3:
        body = mutate(rng, body)
    if rng.random() < 0.05:
        body = b"[" + b" " * (1100 * 1024) + b"]"  # past max_message_bytes
    headers = [b"Host: 127.0.0.1"]
    if rng.random() < 0.8:
        headers.append(b"Authorization: Bearer " + (TOKEN.encode() if rng.random() < 0.7 else mutate(rng, TOKEN.encode())))
    length_choice = rng.randrange(6)
    if length_choice == 0:
        headers.append(b"Content-Length: %d" % len(body))
    elif length_choice == 1:
        headers.append(b"Content-Length: %d" % rng.choice([0, len(body) + 100, 2 ** 40, 1]))
    elif length_choice == 2:
        headers.append(rng.choice([b"Content-Length: -5", b"Content-Length: abc", b"Content-Length: 1, 2"]))
    elif length_choice == 3:
        cut = len(body) // 2
        body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (cut, body[:cut], len(body) - cut, body[cut:])
        if rng.random() < 0.3:
            body = mutate(rng, body)
        headers.append(b"Transfer-Encoding: chunked")
    elif length_choice == 4:
        headers.append(b"Content-Length: %d" % len(body))
        headers.append(b"Content-Length: %d" % (len(body) + 1))
    if rng.random() < 0.1:
        headers.append(b"X-Funboost-Timeout: " + rng.choice([b"-1", b"nan", b"1e999", b"0.05"]))
    if rng.random() < 0.05:
        headers.append(b"X-Big: " + b"h" * 70000)
    request = method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\nConnection: close\r\n\r\n" + body
    if rng.random() < 0.15:
        request = request[:rng.randrange(len(request))]
    if rng.random() < 0.05:
        request = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    return request


def check_http_replies(data: bytes) -> None:
    if not data:
        return  # closed without answering (e.g. cut mid-request): allowed
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    status = int(data[9:12])
    assert status < 500 or status == 503, f"server error {status}: {data[:300]!r}"


# ---------------------------------------------------------------------------------------------- the test

def start_tcp(queue: str) -> tuple[Any, Any, Callable[[], int]]:
    pytest.importorskip("funboost_tcp")
    from funboost_tcp import TcpBroker

    opts = {"port": free_port(), "token": TOKEN, "max_frame_bytes": 64 * 1024}
    consumer = TcpBroker(queue, TcpBroker.parse_options(opts))
    consumer.serve()
    client = TcpBroker(queue, TcpBroker.parse_options(opts))
    return consumer, client, lambda: consumer.server.connection_count


def start_http(queue: str) -> tuple[Any, Any, Callable[[], int]]:
    pytest.importorskip("funboost_http")
    from funboost_http import HttpBroker

    opts = {"port": free_port(), "token": TOKEN, "max_message_bytes": 1024 * 1024}
    consumer = HttpBroker(queue, HttpBroker.parse_options(opts))
    consumer.serve()
    client = HttpBroker(queue, HttpBroker.parse_options(opts))
    return consumer, client, lambda: 0


@pytest.mark.parametrize("transport", ["tcp", "http"])
def test_transport_servers_survive_malformed_frames(transport, qname):
    start, make_case, check = {"tcp": (start_tcp, tcp_case, check_tcp_replies),
                               "http": (start_http, http_case, check_http_replies)}[transport]
    s = seed()
    rng = random.Random(s)
    consumer, client, open_connections = start(qname)
    port = consumer.options.port
    replies = 0
    t0 = time.monotonic()
    try:
        for n in range(SIZE.transport_fuzz_cases):
            data = make_case(rng, qname)
            try:
                answer = exchange(port, data)
                check(answer)
            except AssertionError as exc:
                raise AssertionError(f"case {n} (FUNBOOST_FUZZ_SEED={s}): sent {data[:200]!r}...: {exc}") from None
            replies += bool(answer)
            if n % 50 == 49:
                client.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
                assert client.queue_size().ready >= 1, f"the server stopped serving after case {n} (seed {s})"
        client.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert client.queue_size().ready >= 1
        wait_until(lambda: open_connections() <= 1, 10, 0.05, "the fuzzers' connections closed on the server")
        elapsed = time.monotonic() - t0
    finally:
        client.close()
        consumer.close()
    print(f"\n{transport}: {SIZE.transport_fuzz_cases} fuzz cases (seed {s}), {replies} answered, "
          f"server kept serving, {elapsed:.1f}s")
    record("transport_fuzz", transport=transport, cases=SIZE.transport_fuzz_cases, seed=s, answered=replies,
           internal_errors=0, seconds=round(elapsed, 1))


@pytest.mark.parametrize("transport", ["tcp", "http"])
def test_transport_frame_parsers_under_hypothesis(transport, qname):
    """The same servers driven by Hypothesis: raw bytes, and the generators above fed with a Hypothesis
    ``Random`` (so a failure shrinks to a small case and replays from Hypothesis's report)."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    start, make_case, check = {"tcp": (start_tcp, tcp_case, check_tcp_replies),
                               "http": (start_http, http_case, check_http_replies)}[transport]
    consumer, client, open_connections = start(qname)
    port = consumer.options.port
    examples = max(50, SIZE.fuzz_examples // 3)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(rng=st.randoms(use_true_random=False), raw=st.binary(max_size=600), use_raw=st.booleans())
    def one_case(rng: random.Random, raw: bytes, use_raw: bool) -> None:
        check(exchange(port, raw if use_raw else make_case(rng, qname)))

    try:
        one_case()
        client.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert client.queue_size().ready >= 1, "the server stopped serving"
        wait_until(lambda: open_connections() <= 1, 10, 0.05, "the fuzzers' connections closed on the server")
    finally:
        client.close()
        consumer.close()
    record("transport_fuzz_hypothesis", transport=transport, examples=examples)
