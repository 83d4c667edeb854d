"""The Handle's own connections: commands after the first skip redis-py's reply layers (a hiredis reader
of the connection's own). Replies and errors must be what redis-py gives, and a connection the server
closed must fail the command as a transient error and be replaced, never reused."""
from __future__ import annotations

import pytest
import redis

import funboost_redis.connection as connection
from funboost.plugins.broker import OutgoingMessage
from funboost_redis import RedisAckAbleBroker, RedisOptions
from funboost_redis.connection import Handle, conn_spec, encode_command


@pytest.fixture
def handle(redis_url: str) -> Handle:
    return Handle(conn_spec(RedisOptions(url=redis_url)))


def test_direct_path_replies_and_errors_are_redis_pys(handle: Handle, qname: str):
    cmd = handle.command_packed
    assert cmd(encode_command("PING")) == b"PONG"  # through redis-py: connects
    own = handle._free[0]
    assert own.sock is not None, "the second command should take the direct path"
    try:
        assert cmd(encode_command("HSET", qname, "a", "1")) == 1
        assert cmd(encode_command("HGETALL", qname)) == handle.client.execute_command("HGETALL", qname)
        assert cmd(encode_command("RPUSH", qname + "l", "x", "y")) == 2
        assert cmd(encode_command("LRANGE", qname + "l", 0, -1)) == [b"x", b"y"]
        assert cmd(encode_command("GET", qname + "missing")) is None
        with pytest.raises(redis.exceptions.NoScriptError):  # mapped like redis-py's parser maps it
            cmd(encode_command("EVALSHA", "0" * 40, 0))
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            cmd(encode_command("LPUSH"))
        # an error reply leaves the connection in step: the same one answers the next command
        assert cmd(encode_command("PING")) == b"PONG"
        assert handle._free == [own] and own.sock is not None
    finally:
        handle.client.delete(qname, qname + "l")


def test_a_connection_the_server_closed_fails_once_and_is_replaced(handle: Handle, redis_url: str):
    cmd = handle.command_packed
    cmd(encode_command("PING"))
    client_id = cmd(encode_command("CLIENT", "ID"))  # the direct path, on the connection kept in _free
    first = handle._free[0]
    killer = redis.Redis.from_url(redis_url)
    try:
        assert killer.client_kill_filter(_id=client_id) == 1
    finally:
        killer.close()
    with pytest.raises(connection.TRANSIENT_ERRORS):
        cmd(encode_command("PING"))
    assert first not in handle._free  # dropped, not lent again
    assert cmd(encode_command("PING")) == b"PONG"  # a new connection
    assert cmd(encode_command("CLIENT", "ID")) != client_id


def test_a_push_after_the_server_closed_the_connection_is_retried(redis_url: str, qname: str):
    broker = RedisAckAbleBroker(qname, RedisOptions(url=redis_url))
    try:
        broker.publish([OutgoingMessage(body='{"x": 1}')])
        h = broker._h()
        client_id = h.command_packed(encode_command("CLIENT", "ID"))
        killer = redis.Redis.from_url(redis_url)
        try:
            killer.client_kill_filter(_id=client_id)
        finally:
            killer.close()
        broker.publish([OutgoingMessage(body='{"x": 2}')])  # with_retry: the dead connection costs one attempt
        assert broker.queue_size().ready == 2
    finally:
        broker.purge()
        broker.close()


def test_an_idle_connection_goes_through_redis_pys_health_check(handle: Handle, monkeypatch):
    """Past the idle limit the command takes redis-py's path, which PINGs a connection idle for its
    health_check_interval before using it."""
    cmd = handle.command_packed
    cmd(encode_command("PING"))
    own = handle._free[0]
    calls = []
    real = own.conn.send_packed_command
    monkeypatch.setattr(own.conn, "send_packed_command", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    assert cmd(encode_command("PING")) == b"PONG"
    assert calls == []  # direct
    monkeypatch.setattr(connection, "_DIRECT_MAX_IDLE", -1.0)
    assert cmd(encode_command("PING")) == b"PONG"
    assert len(calls) == 1  # through redis-py


def test_pool_is_not_capped_at_redis_pys_default(redis_url: str, qname: str):
    """redis-py 6+ caps a pool at 100 connections unless told otherwise; 150 threads storing RPC results
    at once (a consumer of concurrent_num=200) raised MaxConnectionsError and lost results. Documented
    default: unlimited."""
    import threading

    from funboost_redis.state import RedisStateBackend

    assert connection.build_client(conn_spec(RedisOptions(url=redis_url))).connection_pool.max_connections >= 2 ** 31
    capped = connection.build_client(conn_spec(RedisOptions(url=redis_url, max_connections=7)))
    assert capped.connection_pool.max_connections == 7
    be = RedisStateBackend(redis_url)
    gate, errors = threading.Barrier(150), []

    def write(i: int) -> None:
        gate.wait()
        try:
            be.set_result(f"{qname}-{i}", {"result": i}, 30)
        except Exception as exc:  # pragma: no cover - the failure this test is about
            errors.append(repr(exc))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(150)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert all(be.get_result(f"{qname}-{i}") == {"result": i} for i in range(150))


def test_unreachable_reason_hides_the_password():
    from funboost.testing import assert_unreachable_reason_hides_password
    assert_unreachable_reason_hides_password(RedisAckAbleBroker, RedisOptions(url="redis://u:s3cret@127.0.0.1:1/0"),
                                             "s3cret")
