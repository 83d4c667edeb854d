"""funboost.transport.security and funboost.transport.loop_thread (shared by the tcp and http transports)."""
import asyncio
import threading

import pytest

from funboost.transport.loop_thread import LoopThread, shared_loop
from funboost.transport.security import InsecureBind, TokenCheck, check_bind, is_loopback_host


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True),
                                           ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                           ("10.0.0.5", False), ("example.org", False)])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


def test_check_bind_refuses_public_bind_without_authentication():
    check_bind("tcp", "127.0.0.1", None)
    check_bind("tcp", "0.0.0.0", "secret")
    check_bind("tcp", "0.0.0.0", None, tls_client_ca_file="/ca.pem")
    with pytest.raises(InsecureBind, match="token"):
        check_bind("tcp", "0.0.0.0", None)
    with pytest.raises(ValueError):  # InsecureBind is a ValueError (a configuration error)
        check_bind("http", "192.168.1.4", "")


def test_token_check():
    assert TokenCheck(None)(None) and TokenCheck("")("anything")
    check = TokenCheck("s3cret")
    assert check("s3cret") and check(b"s3cret")
    assert not check(None) and not check("") and not check("s3cre") and not check("s3cret!") and not check(42)
    assert not check("\udcff")  # a lone surrogate from a decoded frame must not raise


def test_loop_thread_runs_coroutines_and_callbacks():
    lt = LoopThread("test-loop")
    try:
        async def double(x):
            await asyncio.sleep(0)
            return threading.current_thread().name, x * 2
        assert lt.run(double(21), timeout=5) == ("test-loop", 42)
        seen = threading.Event()
        lt.call_soon(seen.set)
        assert seen.wait(5)
        with pytest.raises(TimeoutError):
            lt.run(asyncio.sleep(10), timeout=0.05)
    finally:
        lt.stop()
    assert not lt.thread.is_alive()


def test_shared_loop_is_one_per_name():
    assert shared_loop("funboost-test-shared") is shared_loop("funboost-test-shared")
    assert shared_loop("funboost-test-shared") is not shared_loop("funboost-test-other")


def test_server_transport_options_read_the_environment(monkeypatch):
    from typing import ClassVar

    from pydantic import Field, ValidationError

    from funboost.transport.options import ServerTransportOptions

    class Opts(ServerTransportOptions):
        env_prefix: ClassVar[str] = "XTEST"
        port: int = Field(default=4321, ge=0, le=65535)
        max_frame_bytes: int = 100

    assert Opts().target_addresses() == ["127.0.0.1:4321"]
    monkeypatch.setenv("FUNBOOST_XTEST_ADDRESSES", "a:1, b:2")
    monkeypatch.setenv("FUNBOOST_XTEST_MAX_FRAME_BYTES", "77")
    monkeypatch.setenv("FUNBOOST_XTEST_TOKEN", "tok")
    o = Opts(token="explicit")
    assert o.addresses == ["a:1", "b:2"] and o.max_frame_bytes == 77 and o.token == "explicit"
    assert Opts(host="::1", addresses=None).target_addresses() == ["[::1]:4321"]
    with pytest.raises(ValidationError):
        Opts(addresses=["nocolon"])
    with pytest.raises(ValidationError):
        Opts(bogus=1)


def test_parse_envelope_takes_an_already_decoded_object():
    from funboost.transport.errors import BadRequest
    from funboost.transport.server import parse_envelope

    env = {"x": 1, "extra": {"task_id": "t"}}
    assert parse_envelope(env) is env
    assert parse_envelope('{"x": 1}') == {"x": 1}
    with pytest.raises(BadRequest):
        parse_envelope("[1]")
