"""Token, size limit, malformed frames, loopback-by-default and TLS: refused with an error frame, the
connection and the server keep serving."""
import json
import os
from functools import partial

import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.testing.tls import pki  # noqa: F401  (the fixture: certificates made by the test)
from funboost.testing.serving import check_non_loopback_bind_needs_a_token, serve as serve_kind

from funboost_tcp import MessageTooLarge, TcpBroker, TcpBrokerError
from funboost_tcp import protocol as p
from support import RawClient, rss_bytes

ENVELOPE = {"x": 1, "extra": {"task_id": "t1"}}


serve = partial(serve_kind, "TCP")


def test_token_checked_on_every_request(queue_name, port):
    consumer = serve(queue_name, port, token="right-token")
    raw = RawClient(port)
    try:
        good = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "token": "right-token"}))
        good.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert good.queue_size().ready == 1
        assert good.health() == {f"127.0.0.1:{port}": "SERVING"}

        bad = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "token": "wrong"}))
        for op in (lambda: bad.publish([OutgoingMessage(body=json.dumps(ENVELOPE))]),
                   lambda: bad.sync_call(json.dumps(ENVELOPE), 5)):
            with pytest.raises(TcpBrokerError) as e:
                op()
            assert e.value.code == "UNAUTHENTICATED"
        assert bad.health()[f"127.0.0.1:{port}"] == "UNAUTHENTICATED"
        for frame_type, req in ((p.PUBLISH, {"queue": queue_name, "bodies": [ENVELOPE]}),  # no token
                                (p.CALL, {"queue": queue_name, "body": ENVELOPE, "token": None}),
                                (p.STATS, {"queue": queue_name, "token": "right-token "}),
                                (p.PURGE, {"queue": queue_name, "token": "right-tokeN"}),
                                (p.PING, {"token": ["right-token"]})):
            assert raw.request(frame_type, req) == (p.ERROR, {"code": "UNAUTHENTICATED",
                                                             "message": "missing or invalid token"})
        assert consumer.queue_size().ready == 1  # nothing got in, nothing was purged
        assert raw.request(p.STATS, {"queue": queue_name, "token": "right-token"})[1]["ready"] == 1
    finally:
        raw.close()
        consumer.close()


def test_oversized_frames_are_refused_and_the_connection_keeps_serving(queue_name, port):
    consumer = serve(queue_name, port, max_frame_bytes=64 * 1024)
    raw = RawClient(port)
    try:
        big = json.dumps({"queue": queue_name, "bodies": [{"x": "a" * 100_000}]}).encode()
        rid = raw.send_frame(p.PUBLISH, big)
        assert raw.read() == (rid, p.ERROR, {"code": "TOO_LARGE",
                                             "message": f"frame of {len(big)} bytes exceeds max_frame_bytes=65536"})
        # a header that claims 3 GiB: refused at once (nothing is allocated for it); then the connection is
        # closed by this client since it will not send 3 GiB
        assert raw.request(p.PUBLISH, {"queue": queue_name, "bodies": [ENVELOPE]}) == (p.OK, {"accepted": 1})
        raw2 = RawClient(port)
        rid = raw2.send_frame(p.PUBLISH, b"", length=3 * 1024 ** 3)
        assert raw2.read() == (rid, p.ERROR, {"code": "TOO_LARGE",
                                              "message": f"frame of {3 * 1024 ** 3} bytes exceeds max_frame_bytes=65536"})
        raw2.close()
        # the client checks the size before sending
        pub = TcpBroker(queue_name, consumer.options)
        with pytest.raises(MessageTooLarge):
            pub.publish([OutgoingMessage(body=json.dumps({"x": "a" * 100_000}))])
        with pytest.raises(MessageTooLarge):
            pub.sync_call(json.dumps({"x": "a" * 100_000}), 5)
        pub.publish([OutgoingMessage(body='{"x": 2}')])
        assert consumer.queue_size().ready == 2
    finally:
        raw.close()
        consumer.close()


def test_the_smallest_frame_limit_still_carries_messages_that_fit(queue_name, port):
    """max_frame_bytes accepts 1 KiB; the client reserved a fixed KiB for framing, so at that limit every
    message was refused. Now what fits in a frame is sent, what does not is refused naming the option."""
    consumer = serve(queue_name, port, max_frame_bytes=1024)
    try:
        pub = TcpBroker(queue_name, consumer.options)
        pub.publish([OutgoingMessage(body=json.dumps({"x": "a" * 600, "extra": {"task_id": "t"}}))])
        assert consumer.queue_size().ready == 1
        with pytest.raises(MessageTooLarge, match="max_frame_bytes=1024"):
            pub.publish([OutgoingMessage(body=json.dumps({"x": "a" * 1000}))])
    finally:
        consumer.close()


MALFORMED = [
    (p.PUBLISH, b"{not json"),
    (p.PUBLISH, b"\xff\xfe\x00"),
    (p.PUBLISH, b""),
    (p.PUBLISH, b"[1, 2]"),
    (p.PUBLISH, b'"just a string"'),
    (p.PUBLISH, b'{"queue": 5, "bodies": []}'),
    (p.PUBLISH, b'{"bodies": [{}]}'),
    (p.PUBLISH, b'{"queue": "Q", "bodies": "x"}'),
    (p.PUBLISH, b'{"queue": "Q", "bodies": [{"x": 1}, 42]}'),
    (p.PUBLISH, b'{"queue": "Q", "bodies": [{"x": 1}, "{\\"y\\": 2}"]}'),
    (p.CALL, b'{"queue": "Q", "body": "{\\"x\\": 1}"}'),
    (p.CALL, b'{"queue": "Q", "body": [1]}'),
    (p.CALL, b'{"queue": "Q", "body": {"x": 1}, "timeout": "soon"}'),
    (p.CALL, b'{"queue": "Q", "body": {"x": 1}, "timeout": -1}'),
    (p.STATS, b'{"queue": null}'),
    (p.PING, b'{"queue": 3}'),
    (0, b'{"queue": "Q"}'),
    (77, b'{"queue": "Q"}'),
    (p.OK, b'{"queue": "Q"}'),
]


def test_malformed_frames_get_errors_and_the_server_keeps_serving_with_flat_memory(queue_name, port):
    consumer = serve(queue_name, port)
    raw = RawClient(port)
    frames = [(t, payload.replace(b'"Q"', json.dumps(queue_name).encode())) for t, payload in MALFORMED]
    frames.append((p.PUBLISH, json.dumps({"queue": "not-hosted", "bodies": [ENVELOPE]}).encode()))
    expected = ["BAD_REQUEST"] * len(MALFORMED) + ["NOT_FOUND"]

    def round_of(n: int) -> None:
        sent = {}
        for i in range(n):
            t, payload = frames[i % len(frames)]
            sent[raw.send_frame(t, payload)] = expected[i % len(frames)]
        for _ in range(n):  # every one answered with an error, in one connection that stays open
            rid, frame_type, reply = raw.read()
            assert frame_type == p.ERROR and reply["code"] == sent.pop(rid), reply
        assert not sent

    try:
        round_of(1000)
        rss_after_first = rss_bytes(os.getpid())
        for _ in range(5):
            round_of(1000)
        # generous: a leak of one malformed frame's payload per frame would be megabytes here
        assert rss_bytes(os.getpid()) - rss_after_first < 8 * 1024 * 1024
        assert consumer.queue_size().ready == 0  # nothing malformed got in
        assert raw.request(p.PUBLISH, {"queue": queue_name, "bodies": [ENVELOPE]}) == (p.OK, {"accepted": 1})
        pub = TcpBroker(queue_name, consumer.options)
        pub.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert consumer.queue_size().ready == 2
    finally:
        raw.close()
        consumer.close()


def test_non_loopback_bind_refuses_to_start_without_a_token(queue_name, port):
    def not_registered() -> None:
        assert TcpBroker.registry.lookup("0.0.0.0", port) is None

    check_non_loopback_bind_needs_a_token("TCP", queue_name, port, {"addresses": [f"127.0.0.1:{port}"]},
                                          after_refusal=not_registered)


def test_default_bind_is_loopback(queue_name, port):
    b = serve(queue_name, port)
    try:
        assert b.address == f"127.0.0.1:{port}"
    finally:
        b.close()


def test_tls_with_token(queue_name, port, pki):
    consumer = serve(queue_name, port, tls_cert_file=pki["server.pem"], tls_key_file=pki["server.key"], token="tok")
    try:
        pub = TcpBroker(queue_name, TcpBroker.parse_options(
            {"addresses": [f"localhost:{port}"], "tls_ca_file": pki["ca.pem"], "token": "tok"}))
        pub.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert pub.queue_size().ready == 1
        plain = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "token": "tok", "publish_timeout": 0.5,
                                                               "rpc_timeout": 1}))
        with pytest.raises(TcpBrokerError):  # a plaintext client cannot talk to a TLS server
            plain.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert pub.health() == {f"localhost:{port}": "SERVING"}  # and the server still serves
    finally:
        consumer.close()


def test_tls_client_certificates_allow_a_public_bind_without_token(queue_name, port, pki):
    consumer = serve(queue_name, port, host="0.0.0.0", tls_cert_file=pki["server.pem"],
                     tls_key_file=pki["server.key"], tls_client_ca_file=pki["ca.pem"])
    try:
        pub = TcpBroker(queue_name, TcpBroker.parse_options(
            {"addresses": [f"127.0.0.1:{port}"], "tls_ca_file": pki["ca.pem"], "tls_client_cert_file": pki["client.pem"],
             "tls_client_key_file": pki["client.key"]}))
        pub.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert consumer.queue_size().ready == 1
        anonymous = TcpBroker(queue_name, TcpBroker.parse_options(
            {"addresses": [f"127.0.0.1:{port}"], "tls_ca_file": pki["ca.pem"], "publish_timeout": 0.5}))
        with pytest.raises(TcpBrokerError):  # no client certificate: the handshake fails
            anonymous.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert consumer.queue_size().ready == 1
    finally:
        consumer.close()
