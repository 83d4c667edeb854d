"""Token, TLS, oversized and malformed requests: refused with a gRPC error, the server keeps serving."""
import json
import shutil
import subprocess
from functools import partial

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from funboost.plugins.broker import OutgoingMessage
from funboost.testing.serving import check_non_loopback_bind_needs_a_token, serve as serve_kind
from funboost_grpc import GrpcBroker, MessageTooLarge
from funboost_grpc.errors import GrpcBrokerError
from funboost_grpc.proto import broker_pb2, broker_pb2_grpc
from support import LoopThread


serve = partial(serve_kind, "GRPC")


def raw_stub(port):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    return ch, broker_pb2_grpc.FunboostBrokerStub(ch)


def test_non_loopback_bind_without_token_refuses_to_start(queue_name, port):
    """As tcp and http: a port other hosts can reach never runs tasks for anyone (it did before)."""
    check_non_loopback_bind_needs_a_token("GRPC", queue_name, port)


def test_oversized_and_malformed_get_grpc_errors_and_server_keeps_serving(queue_name, port):
    consumer = serve(queue_name, port, max_message_bytes=64 * 1024)
    ch, stub = raw_stub(port)
    try:
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=["{\"x\": \"" + "a" * 100_000 + "\"}"]),
                         timeout=5)
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for bad in ["{not json", "[1, 2]", "42", ""]:
            with pytest.raises(grpc.RpcError) as e:
                stub.Publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=['{"x": 1}', bad]), timeout=5)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.Call(broker_pb2.CallRequest(queue_name=queue_name, body="{oops"), timeout=5)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(broker_pb2.PublishRequest(queue_name="nope", bodies=["{}"]), timeout=5)
        assert e.value.code() is grpc.StatusCode.NOT_FOUND
        # a rejected batch is rejected whole; the server still serves
        assert consumer.queue_size().ready == 0
        assert stub.Publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=['{"x": 1}']), timeout=5).accepted == 1
        assert consumer.queue_size().ready == 1
        # the client checks the size before sending
        pub = GrpcBroker(queue_name, consumer.options)
        with pytest.raises(MessageTooLarge):
            pub.publish([OutgoingMessage(body=json.dumps({"x": "a" * 100_000}))])
        pub.publish([OutgoingMessage(body='{"x": 2}')])
        assert consumer.queue_size().ready == 2
    finally:
        ch.close()
        consumer.close()


def test_token_checked_on_every_call(queue_name, port):
    consumer = serve(queue_name, port, token="right-token")
    loop = LoopThread(consumer)
    ch, stub = raw_stub(port)
    try:
        good = GrpcBroker(queue_name, GrpcBroker.parse_options({"port": port, "token": "right-token"}))
        assert good.sync_call('{"x": 2}', 10)["doubled"] == 4
        good.publish([OutgoingMessage(body='{"x": 3}')])
        assert good.health()[f"127.0.0.1:{port}"] == "SERVING"

        bad = GrpcBroker(queue_name, GrpcBroker.parse_options({"port": port, "token": "wrong"}))
        for op in (lambda: bad.publish([OutgoingMessage(body='{"x": 1}')]), lambda: bad.sync_call('{"x": 1}', 5)):
            with pytest.raises(GrpcBrokerError) as e:
                op()
            assert e.value.code == "UNAUTHENTICATED"
        assert bad.health()[f"127.0.0.1:{port}"] == "UNAUTHENTICATED"
        for call in (lambda: stub.Publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=["{}"]), timeout=5),
                     lambda: stub.Stats(broker_pb2.StatsRequest(queue_name=queue_name), timeout=5),
                     lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5),
                     lambda: list(health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=5))):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert good.sync_call('{"x": 5}', 10)["doubled"] == 10  # still serving
    finally:
        ch.close()
        loop.close()
        consumer.close()


def test_health_can_be_left_open_for_load_balancers(queue_name, port):
    consumer = serve(queue_name, port, token="t", health_requires_token=False)
    ch, stub = raw_stub(port)
    try:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=queue_name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            stub.Publish(broker_pb2.PublishRequest(queue_name=queue_name, bodies=["{}"]), timeout=5)
        assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        ch.close()
        consumer.close()


def test_health_protocol_per_queue(queue_name, port):
    consumer = serve(queue_name, port)
    address = consumer.address
    ch, _ = raw_stub(port)
    check = health_pb2_grpc.HealthStub(ch).Check
    try:
        assert check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1  # SERVING
        assert check(health_pb2.HealthCheckRequest(service="funboost.grpc.v1.FunboostBroker"), timeout=5).status == 1
        assert check(health_pb2.HealthCheckRequest(service=queue_name), timeout=5).status == 1
        with pytest.raises(grpc.RpcError) as e:
            check(health_pb2.HealthCheckRequest(service="not-hosted"), timeout=5)
        assert e.value.code() is grpc.StatusCode.NOT_FOUND
        assert GrpcBroker("not-hosted", consumer.options).health()[consumer.address] == "SERVICE_UNKNOWN"
    finally:
        ch.close()
        consumer.close()
    assert GrpcBroker(queue_name, consumer.options).health(timeout=0.5)[address] == "UNREACHABLE"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_tls(queue_name, port, certs):
    cert, key = certs
    consumer = serve(queue_name, port, tls_cert_file=cert, tls_key_file=key, token="tok")
    loop = LoopThread(consumer)
    try:
        pub = GrpcBroker(queue_name, GrpcBroker.parse_options(
            {"addresses": [f"localhost:{port}"], "tls_root_cert_file": cert, "token": "tok"}))
        assert pub.sync_call('{"x": 4}', 10)["doubled"] == 8
        plain = GrpcBroker(queue_name, GrpcBroker.parse_options(
            {"port": port, "token": "tok", "publish_timeout": 0.5}))
        with pytest.raises(GrpcBrokerError):  # a plaintext client cannot talk to a TLS server
            plain.publish([OutgoingMessage(body='{"x": 1}')])
    finally:
        loop.close()
        consumer.close()
