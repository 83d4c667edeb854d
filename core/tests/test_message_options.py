"""Per-message options arrive from any client: decode normalises what it can use and refuses the rest with
a MalformedMessage naming the option (the consumer dead-letters it), so the engine never meets an option
of the wrong type (a bad eta was handed back to the broker forever, a text function_timeout failed
inside the runner on every attempt)."""
import pytest

from funboost.exceptions import MalformedMessage
from funboost.message import decode


def _extra(**options):
    return decode({"x": 1, "extra": {"task_id": "t", "publish_time": 1.0, **options}}).extra


@pytest.mark.parametrize("options, normalised", [
    ({"max_retry_times": "3"}, {"max_retry_times": 3}),
    ({"max_retry_times": 2.0}, {"max_retry_times": 2}),
    ({"function_timeout": "1.5"}, {"function_timeout": 1.5}),
    ({"msg_expire_seconds": 10}, {"msg_expire_seconds": 10}),
    ({"countdown": "2"}, {"countdown": 2.0}),
    ({"do_task_filtering": 1}, {"do_task_filtering": True}),
    ({"is_using_rpc_mode": False}, {"is_using_rpc_mode": False}),
    ({"eta": "2030-01-01T00:00:00"}, {"eta": "2030-01-01T00:00:00"}),
    ({"eta": 1900000000}, {"eta": 1900000000}),
    ({"priority": "7"}, {"priority": 7}),
    ({"task_id": 12}, {"task_id": "12"}),
    ({"publish_time": "1700000000.5"}, {"publish_time": 1700000000.5}),
])
def test_usable_options_are_normalised(options, normalised):
    extra = _extra(**options)
    for key, value in normalised.items():
        assert extra[key] == value and type(extra[key]) is type(value), (key, extra[key])


@pytest.mark.parametrize("options, named", [
    ({"eta": "tomorrow"}, "extra.eta"),
    ({"eta": [2030]}, "extra.eta"),
    ({"function_timeout": "abc"}, "extra.function_timeout"),
    ({"function_timeout": -1}, "extra.function_timeout"),
    ({"function_timeout": float("inf")}, "extra.function_timeout"),
    ({"max_retry_times": "lots"}, "extra.max_retry_times"),
    ({"max_retry_times": 2.5}, "extra.max_retry_times"),
    ({"max_retry_times": True}, "extra.max_retry_times"),
    ({"msg_expire_seconds": {}}, "extra.msg_expire_seconds"),
    ({"do_task_filtering": "yes"}, "extra.do_task_filtering"),
    ({"filter_str": 5}, "extra.filter_str"),
    ({"task_id": [1]}, "extra.task_id"),
    ({"publish_time": "noon"}, "extra.publish_time"),
    ({"_advanced_retry_count": "x"}, "extra._advanced_retry_count"),
])
def test_unusable_options_are_malformed_and_named(options, named):
    with pytest.raises(MalformedMessage, match=named.replace(".", r"\.")):
        _extra(**options)


def test_the_caller_of_a_malformed_message_gets_the_reason_not_a_timeout():
    """Another client sends a message with an option the consumer refuses: it is dead-lettered, and an RPC
    caller waiting for its task id gets the reason at once."""
    import json
    import uuid

    from funboost import AsyncResult, BoosterParams, RemoteTaskError, boost
    from funboost.plugins.broker import OutgoingMessage

    @boost(BoosterParams(queue_name=f"malformed_rpc_{uuid.uuid4().hex[:8]}", broker_kind="sqlite",
                         state_backend="sqlite", is_using_rpc_mode=True, log_to_console=False))
    def work(x):
        return x

    task_id = uuid.uuid4().hex
    body = json.dumps({"x": 1, "extra": {"task_id": task_id, "publish_time": 1.0, "function_timeout": -1}})
    work.broker.publish([OutgoingMessage(body=body, task_id=task_id)])
    work.consume()
    try:
        with pytest.raises(RemoteTaskError, match="function_timeout"):
            AsyncResult(task_id, work).get(timeout=20)
    finally:
        work.stop_consume(5)
