"""A publish while the server is unreachable keeps retrying for ``publish_timeout``, then raises
``PublishError`` naming the address and the reason; a server that comes up within the timeout gets the
message. No server is touched: the "server" is an unused port, later a local proxy to the real one."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import fetch_until
from funboost.testing.relay import forward
from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions
from funboost_rabbitmq.connection import PublishError

from conftest import wait_until


def _msgs(n: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(body=json.dumps({"x": i}), task_id=f"t{i}") for i in range(n)]


@contextmanager
def _closed_port() -> Iterator[socket.socket]:
    """A loopback port that is bound but not listening: connections to it are refused until listen()."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


def _proxy(listener: socket.socket, upstream: tuple[str, int], stop: threading.Event) -> None:
    """Forward every connection accepted on ``listener`` to ``upstream`` (byte for byte)."""
    listener.listen(16)
    listener.settimeout(0.2)
    socks: list[socket.socket] = []
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        socks += [client, forward(client, upstream)]
    for s in socks:
        s.close()


@pytest.mark.parametrize("count", [1, 3], ids=["push", "batch"])
def test_unreachable_server_raises_publish_error_after_publish_timeout(count):
    with _closed_port() as port_socket:
        port = port_socket.getsockname()[1]
        b = RabbitmqBroker(f"fbtest_unreach_{uuid.uuid4().hex[:8]}", RabbitmqOptions(
            url=f"amqp://guest:s3cret@127.0.0.1:{port}/%2F", publish_timeout=2.0, reconnect_max_delay=0.5))
        try:
            t0 = time.monotonic()
            with pytest.raises(PublishError) as err:
                b.publish(_msgs(count))
            elapsed = time.monotonic() - t0
        finally:
            b.close()
    text = str(err.value)
    assert 2.0 <= elapsed < 6.0, elapsed  # retried for publish_timeout, not much longer
    assert f"127.0.0.1:{port}" in text and "publish_timeout" in text, text
    assert "Connection refused" in text, text
    assert "s3cret" not in text


@pytest.mark.parametrize("count", [1, 3], ids=["push", "batch"])
def test_publish_succeeds_when_the_server_comes_up_within_publish_timeout(count, rabbitmq_url, make_broker,
                                                                          queue_name):
    host_port = rabbitmq_url.split("@", 1)[1].split("/", 1)[0]
    upstream = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
    stop = threading.Event()
    with _closed_port() as port_socket:
        port = port_socket.getsockname()[1]
        url = rabbitmq_url.replace(host_port, f"127.0.0.1:{port}")
        b = make_broker(queue_name, url=url, publish_timeout=30, reconnect_max_delay=0.5)
        outcome: list = []

        def publish() -> None:
            try:
                b.publish(_msgs(count))
                outcome.append("ok")
            except Exception as exc:  # reported by the assertion below
                outcome.append(exc)

        t = threading.Thread(target=publish)
        t.start()
        # the publish has met a refused connection before the "server" comes up
        wait_until(lambda: b._publisher is not None and "refused" in b._publisher.last_error, 10,
                   message="a refused connection")
        proxy = threading.Thread(target=_proxy, args=(port_socket, upstream, stop), daemon=True)
        proxy.start()
        try:
            t.join(40)
            assert outcome == ["ok"]
            direct = make_broker(queue_name)  # straight to the server
            got = fetch_until(direct, count, timeout=15)
            assert sorted(json.loads(d.body)["x"] for d in got) == list(range(count))
            direct.ack(got)
        finally:
            b.close()
            stop.set()
            proxy.join(5)
