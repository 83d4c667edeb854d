"""Security by default: loopback bind, token on every request, body size limit, malformed requests
refused with a 4xx JSON body while the server keeps serving (and its memory stays flat)."""
from __future__ import annotations

import gc
import http.client
import json
import socket
from functools import partial

import psutil
import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import wait_until
from funboost.testing.serving import check_non_loopback_bind_needs_a_token, serve as serve_kind

from funboost_http import HttpBroker, MessageTooLarge
from funboost_http.errors import HttpBrokerError
from support import raw_request


serve = partial(serve_kind, "HTTP")


def test_default_bind_is_loopback(queue_name, port):
    consumer = serve(queue_name, port)
    try:
        assert consumer.address == f"127.0.0.1:{port}"
        assert consumer.server._sock.getsockname()[0] == "127.0.0.1"
    finally:
        consumer.close()


def test_non_loopback_bind_without_token_refuses_to_start(queue_name, port):
    check_non_loopback_bind_needs_a_token("HTTP", queue_name, port)


def test_token_checked_on_every_request(queue_name, port):
    consumer = serve(queue_name, port, token="right-token")
    base = f"http://127.0.0.1:{port}"
    try:
        good = HttpBroker(queue_name, HttpBroker.parse_options({"port": port, "token": "right-token"}))
        good.publish([OutgoingMessage(body='{"x": 3}')])
        assert good.health() == {f"127.0.0.1:{port}": "SERVING"}
        assert good.queue_size().ready == 1

        for method, path, body in (("POST", f"/queues/{queue_name}/messages", b'{"x": 1}'),
                                   ("POST", f"/queues/{queue_name}/call", b'{"x": 1}'),
                                   ("GET", f"/queues/{queue_name}", None),
                                   ("DELETE", f"/queues/{queue_name}/messages", None),
                                   ("GET", "/healthz", None),
                                   ("GET", "/queues/unknown", None)):  # no hint whether a queue exists
            status, reply = raw_request(base + path, method, body)
            assert status == 401 and reply["error"] == "Unauthorized", (path, reply)
            status, reply = raw_request(base + path, method, body, {"Authorization": "Bearer wrong"})
            assert status == 403 and reply["error"] == "Forbidden", (path, reply)
            status, reply = raw_request(base + path, method, body, {"Authorization": "right-token"})  # no scheme
            assert status == 403, (path, reply)

        bad = HttpBroker(queue_name, HttpBroker.parse_options({"port": port, "token": "wrong"}))
        for op in (lambda: bad.publish([OutgoingMessage(body='{"x": 1}')]), lambda: bad.sync_call('{"x": 1}', 5)):
            with pytest.raises(HttpBrokerError) as e:
                op()
            assert e.value.code == "403"
        assert bad.health() == {f"127.0.0.1:{port}": "UNAUTHENTICATED"}
        assert consumer.queue_size().ready == 1  # nothing got in
    finally:
        consumer.close()


def test_health_can_be_left_open_for_load_balancers(queue_name, port):
    consumer = serve(queue_name, port, token="t", health_requires_token=False)
    try:
        assert raw_request(f"http://127.0.0.1:{port}/healthz?queue={queue_name}")[0] == 200
        assert raw_request(f"http://127.0.0.1:{port}/queues/{queue_name}")[0] == 401
    finally:
        consumer.close()


def _chunked_post(port: int, path: str, chunks: list[bytes]) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", path, body=iter(chunks), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def test_oversized_bodies_get_413(queue_name, port):
    consumer = serve(queue_name, port, max_message_bytes=64 * 1024)
    url = f"http://127.0.0.1:{port}/queues/{queue_name}/messages"
    big = json.dumps({"x": "a" * 100_000}).encode()
    try:
        status, reply = raw_request(url, "POST", big)  # Content-Length above the limit: refused unread
        assert status == 413 and reply["error"] == "PayloadTooLarge"
        assert raw_request(url.replace("/messages", "/call"), "POST", big)[0] == 413
        status, reply = _chunked_post(port, f"/queues/{queue_name}/messages", [b'{"x": "'] + [b"a" * 8192] * 10 + [b'"}'])
        assert status == 413, reply  # no length: counted while reading
        assert consumer.queue_size().ready == 0
        # the client checks the size before sending
        pub = HttpBroker(queue_name, consumer.options)
        with pytest.raises(MessageTooLarge):
            pub.publish([OutgoingMessage(body=big.decode())])
        # the default limit is 16 MiB, and a body just under the limit passes
        assert HttpBroker.parse_options({}).max_message_bytes == 16 * 1024 * 1024
        assert raw_request(url, "POST", json.dumps({"x": "a" * 60_000}).encode())[0] == 202
        assert _chunked_post(port, f"/queues/{queue_name}/messages", [b'{"x":', b' 1}'])[0] == 202
        assert consumer.queue_size().ready == 2
    finally:
        consumer.close()


MALFORMED: list[tuple[str, str, bytes, dict, int]] = [
    # method, path, body, headers, expected status
    ("POST", "/queues/{q}/messages", b"{not json", {}, 400),
    ("POST", "/queues/{q}/messages", b"", {}, 400),
    ("POST", "/queues/{q}/messages", b"42", {}, 400),
    ("POST", "/queues/{q}/messages", b'[{"x": 1}, 7]', {}, 400),
    ("POST", "/queues/{q}/messages", b'"text"', {}, 400),
    ("POST", "/queues/{q}/messages", b"\xff\xfe\x00garbage", {}, 400),
    ("POST", "/queues/{q}/call", b"{oops", {}, 400),
    ("POST", "/queues/{q}/call", b"[]", {}, 400),
    ("POST", "/queues/{q}/call?timeout=abc", b'{"x": 1}', {}, 400),
    ("POST", "/queues/{q}/call", b'{"x": 1}', {"X-Funboost-Timeout": "-1"}, 400),
    ("POST", "/queues/nope/messages", b'{"x": 1}', {}, 404),
    ("POST", "/queues/nope/call", b'{"x": 1}', {}, 404),
    ("GET", "/queues/nope", None, {}, 404),
    ("GET", "/nothing/here", None, {}, 404),
    ("GET", "/queues/{q}/call", None, {}, 405),
    ("PUT", "/queues/{q}/messages", b"{}", {}, 405),
    ("POST", "/healthz", b"{}", {}, 405),
]


def test_malformed_requests_rejected_with_json_and_server_keeps_serving(queue_name, port):
    consumer = serve(queue_name, port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def send(method: str, path: str, body, headers) -> tuple[int, dict]:
        conn.request(method, path.replace("{q}", queue_name), body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        assert r.getheader("content-type") == "application/json"
        return r.status, json.loads(data)

    try:
        for method, path, body, headers, expected in MALFORMED:
            status, reply = send(method, path, body, headers)
            assert status == expected, (method, path, body, reply)
            assert reply["error"] and reply["message"], reply
        proc = psutil.Process()
        for _ in range(200):  # warm-up: allocator pools, caches
            send(*MALFORMED[_ % len(MALFORMED)][:4])
        gc.collect()
        rss_before = proc.memory_info().rss
        rejected = 0
        for i in range(1000):
            method, path, body, headers, expected = MALFORMED[i % len(MALFORMED)]
            status, _ = send(method, path, body, headers)
            rejected += 400 <= status < 500
        gc.collect()
        grown = proc.memory_info().rss - rss_before
        assert rejected == 1000
        assert grown < 20 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 1,000 malformed requests"
        # raw garbage on the socket (not HTTP at all) does not stop the server either
        for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /queues/x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(junk)
                s.recv(4096)
        assert consumer.queue_size().ready == 0  # nothing malformed entered the buffer
        status, reply = send("POST", "/queues/{q}/messages", b'{"x": 1}', {})
        assert (status, reply) == (202, {"accepted": 1})
        assert consumer.queue_size().ready == 1
    finally:
        conn.close()
        consumer.close()


def test_port_in_use_is_an_os_error_at_serve(queue_name, port):
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen(1)
        b = HttpBroker(queue_name, HttpBroker.parse_options({"port": port}))
        with pytest.raises(OSError, match="cannot listen"):
            b.serve()
        b.close()


def test_calls_beyond_the_cap_get_503_and_the_server_keeps_serving(queue_name, port):
    """server_threads x 4 calls under way at most; more are refused with 503 (the client goes elsewhere)."""
    import threading
    consumer = serve(queue_name, port, server_threads=2)  # cap: 8 calls under way; nobody runs them
    url = f"http://127.0.0.1:{port}/queues/{queue_name}/call?timeout=30"
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(raw_request(url, "POST", b'{"x": 1}', timeout=60)[0]))
               for _ in range(8)]
    try:
        [t.start() for t in threads]
        assert wait_until(lambda: consumer.server._calls == 8, 20)
        status, reply = raw_request(url, "POST", b'{"x": 1}')
        assert status == 503 and reply["error"] == "Backpressure", reply
        assert raw_request(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        consumer.close()  # the waiting calls fail with ConsumerClosed
        [t.join(30) for t in threads]
    assert len(results) == 8
