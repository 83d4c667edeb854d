"""Per-connection backpressure: the server reads a connection's next frame only while fewer than
``max_in_flight_per_connection`` of its requests are under way; a full buffer refuses with BACKPRESSURE."""
import json

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import wait_until

from funboost_tcp import NoConsumerAvailable, TcpBroker
from funboost_tcp import protocol as p
from support import RawClient

import pytest


def test_a_connection_with_too_many_requests_under_way_is_not_read(queue_name, port):
    # no engine consumes: calls wait in the buffer, so the ones under way stay under way
    consumer = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "max_in_flight_per_connection": 2}))
    consumer.serve()
    greedy, other = RawClient(port), RawClient(port)
    try:
        ids = [greedy.send(p.CALL, {"queue": queue_name, "body": {"x": i}, "timeout": 30}) for i in range(10)]
        assert wait_until(lambda: consumer.queue_size().ready == 2, 10)
        # the other 8 frames stay in the socket (TCP flow control), not in the server's memory
        assert other.request(p.STATS, {"queue": queue_name})[1] == {"ready": 2, "in_flight": 0, "capacity": 1000}
        # another connection is not held up by this one
        assert other.request(p.PUBLISH, {"queue": queue_name, "bodies": [{"y": 1}]}) == (p.OK, {"accepted": 1})
        # the two calls under way end (purged): the server reads the next two
        assert other.request(p.PURGE, {"queue": queue_name}) == (p.OK, {"purged": 3})
        replies = [greedy.read(), greedy.read()]
        assert sorted(r[0] for r in replies) == ids[:2]
        assert all(r[1] == p.OK and r[2]["exception_type"] == "Purged" for r in replies)
        assert wait_until(lambda: consumer.queue_size().ready == 2, 10)
    finally:
        greedy.close()
        other.close()
        consumer.close()


def test_full_buffer_answers_backpressure_and_publish_gives_up_with_a_clear_error(queue_name, port):
    consumer = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "buffer_size": 3}))
    consumer.serve()
    raw = RawClient(port)
    try:
        bodies = [{"x": i} for i in range(5)]
        assert raw.request(p.PUBLISH, {"queue": queue_name, "bodies": bodies}) == (p.OK, {"accepted": 3})
        frame_type, reply = raw.request(p.PUBLISH, {"queue": queue_name, "bodies": bodies})
        assert frame_type == p.ERROR and reply["code"] == "BACKPRESSURE"
        pub = TcpBroker(queue_name, TcpBroker.parse_options({"port": port, "publish_timeout": 0.5}))
        with pytest.raises(NoConsumerAvailable, match="BACKPRESSURE"):
            pub.publish([OutgoingMessage(body=json.dumps({"x": 9}))])
        assert consumer.queue_size().ready == 3
    finally:
        raw.close()
        consumer.close()
