"""HTTPS: the consumer serves TLS from certificate/key paths, publishers verify it against a CA path,
and client certificates can stand in for a token on a non-loopback bind. Certificates are made by the
test (openssl)."""
from __future__ import annotations

import http.client
import json
import ssl

import pytest
from funboost import BoosterParams, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.testing.tls import pki  # noqa: F401  (the fixture: certificates made by the test)

from funboost_http import HttpBroker
from funboost_http.errors import HttpBrokerError

ENVELOPE = {"x": 1, "extra": {"task_id": "t1"}}


def test_sync_call_and_push_over_https_with_a_token(queue_name, port, pki):
    server_opts = {"port": port, "tls_cert_file": pki["server.pem"], "tls_key_file": pki["server.key"],
                   "token": "tok"}

    @boost(BoosterParams(queue_name=queue_name, broker_kind="HTTP", broker_exclusive_config=server_opts,
                         max_retry_times=0, state_backend="memory", log_to_console=False))
    def add(x: int, y: int) -> int:
        return x + y

    add.consume()
    try:
        add.broker.serve()

        @boost(BoosterParams(queue_name=queue_name, broker_kind="HTTP", state_backend="memory", log_to_console=False,
                             broker_exclusive_config={"addresses": [f"https://localhost:{port}"],
                                                      "tls_ca_file": pki["ca.pem"], "token": "tok"}))
        def add_remote(x: int, y: int) -> int:  # the publisher's view of the same queue
            return x + y

        assert add_remote.sync_call(2, 3, timeout=10) == 5
        assert add_remote.broker.client.health(queue_name) == {f"localhost:{port}": "SERVING"}

        # any HTTPS client that trusts the CA can talk to it; one that does not is refused by its own checks
        ctx = ssl.create_default_context(cafile=pki["ca.pem"])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("POST", f"/queues/{queue_name}/call", body=json.dumps({"x": 4, "y": 5}),
                     headers={"Authorization": "Bearer tok", "Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["result"] == 9
        conn.close()
        untrusting = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.request("GET", "/healthz")
        untrusting.close()

        # a plaintext publisher gets a clear error, and the server keeps serving
        plain = HttpBroker(queue_name, HttpBroker.parse_options(
            {"addresses": [f"127.0.0.1:{port}"], "token": "tok", "publish_timeout": 0.5, "request_timeout": 2}))
        with pytest.raises(HttpBrokerError):
            plain.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert add_remote.sync_call(1, 1, timeout=10) == 2
    finally:
        add.stop_consume(10)


def test_client_certificates_allow_a_public_bind_without_a_token(queue_name, port, pki):
    consumer = HttpBroker(queue_name, HttpBroker.parse_options(
        {"host": "0.0.0.0", "port": port, "tls_cert_file": pki["server.pem"], "tls_key_file": pki["server.key"],
         "tls_client_ca_file": pki["ca.pem"]}))
    consumer.serve()
    try:
        pub = HttpBroker(queue_name, HttpBroker.parse_options(
            {"addresses": [f"127.0.0.1:{port}"], "tls_ca_file": pki["ca.pem"],
             "tls_client_cert_file": pki["client.pem"], "tls_client_key_file": pki["client.key"]}))
        pub.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert consumer.queue_size().ready == 1
        anonymous = HttpBroker(queue_name, HttpBroker.parse_options(
            {"addresses": [f"127.0.0.1:{port}"], "tls_ca_file": pki["ca.pem"], "publish_timeout": 0.5,
             "request_timeout": 2}))
        with pytest.raises(HttpBrokerError):  # no client certificate: refused in the handshake
            anonymous.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])
        assert consumer.queue_size().ready == 1
        pub.publish([OutgoingMessage(body=json.dumps(ENVELOPE))])  # the server still serves
        assert consumer.queue_size().ready == 2
    finally:
        consumer.close()


def test_tls_paths_must_come_in_pairs():
    with pytest.raises(ValueError, match="tls_key_file"):
        HttpBroker.parse_options({"tls_cert_file": "/x/server.pem"})
    with pytest.raises(ValueError, match="tls_client_key_file"):
        HttpBroker.parse_options({"tls_client_cert_file": "/x/client.pem"})
