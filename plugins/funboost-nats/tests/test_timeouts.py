"""Timeouts say what timed out, and ``publish_timeout`` bounds a publish to an unreachable server.

Audit: on Python 3.11 ``concurrent.futures.TimeoutError`` is the builtin ``TimeoutError``, so the
runtime replaced every TimeoutError a coroutine raised (``sync_call``'s "no consumer ... answered")
with "NATS operation did not finish within 13s"; and a publish to an unreachable server waited for the
first connection for ``connect_timeout * 3 + 5`` s whatever its ``publish_timeout``."""
from __future__ import annotations

import json
import socket
import time

import pytest

from funboost_nats import CoreOptions, JetStreamOptions, NatsCoreBroker, NatsJetStreamBroker
from funboost_nats.runtime import runtime
from funboost.plugins.broker import OutgoingMessage


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


def test_a_coroutine_timeout_error_keeps_its_message():
    async def fails() -> None:
        raise TimeoutError("the plugin's own words")
    with pytest.raises(TimeoutError, match="the plugin's own words"):
        runtime().call(fails(), timeout=5)


def test_a_call_that_outlasts_its_timeout_names_the_operation():
    import asyncio
    with pytest.raises(TimeoutError, match="counting sheep did not finish within 0.2s"):
        runtime().call(asyncio.sleep(5), timeout=0.2, what="counting sheep")


def test_sync_call_without_consumer_says_so_at_its_timeout(nats_url, qname):
    b = NatsCoreBroker(qname, CoreOptions(url=nats_url))
    try:
        b.sync_call(json.dumps({"x": 1, "extra": {"task_id": "a"}}), 0.5)  # connects
    except TimeoutError:
        pass
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=f"no consumer of '{qname}' answered within 1.5s"):
            b.sync_call(json.dumps({"x": 1, "extra": {"task_id": "a"}}), 1.5)
        assert 1.4 <= time.monotonic() - t0 < 3.0
    finally:
        b.close()


@pytest.mark.parametrize("cls,options", [(NatsJetStreamBroker, JetStreamOptions), (NatsCoreBroker, CoreOptions)])
def test_publish_to_an_unreachable_server_ends_at_publish_timeout(cls, options):
    b = cls("unreachable", options(url=closed_port_url(), publish_timeout=1.5, connect_timeout=2.0))
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"publish to .* failed within 1.5s: no connection to NATS at "
                                               r"nats://127\.0\.0\.1:\d+ .*ConnectionRefusedError"):
            b.publish([OutgoingMessage(body=json.dumps({"x": 1}))])
        # before: connect_timeout * 3 + 5 = 11 s
        assert time.monotonic() - t0 < 1.5 + 1.0
    finally:
        b.close()


def test_connection_errors_hide_the_password():
    """The URL's password was printed in the error (and so in logs): "no connection to NATS at
    nats://user:secret@..."."""
    from funboost_nats.runtime import check_reachable

    url = closed_port_url().replace("nats://", "nats://user:sekretPW@")
    b = NatsJetStreamBroker("unreachable", JetStreamOptions(url=url, publish_timeout=1.0, connect_timeout=1.0))
    try:
        with pytest.raises(TimeoutError) as err:
            b.publish([OutgoingMessage(body=json.dumps({"x": 1}))])
        assert "sekretPW" not in str(err.value) and "nats://user:***@127.0.0.1" in str(err.value), err.value
    finally:
        b.close()
    reason = check_reachable(url + "," + url, 1.0)
    assert reason and "sekretPW" not in reason, reason
