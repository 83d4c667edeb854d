"""Messages without per-message options take the engine's short path (the queue's settings, worked out once
per consumer); any option in ``extra`` takes the general path. Both must behave the same as before."""
import itertools
import os

from funboost import BoosterParams, boost, fct
from funboost.engine.consumer import Consumer
from funboost.message import build_envelope, decode, dumps
from funboost.plugins.broker import Delivery


_n = itertools.count()


def _consumer(func, **kw):
    b = boost(BoosterParams(queue_name=f"plain_path_{next(_n)}_{os.getpid()}", broker_kind="MEMORY",
                            state_backend="memory", log_to_console=False, **kw))(func)
    return Consumer(b.consumer_setup())


def _run(c, kwargs, **extra):
    env = build_envelope(kwargs, extra_options=extra or None)
    return c.execute_inline(Delivery(body=dumps(env), auto_ack=True))


def test_has_options_is_false_only_for_the_base_keys():
    assert not decode(dumps(build_envelope({"x": 1}))).has_options
    assert decode(dumps(build_envelope({"x": 1}, extra_options={"max_retry_times": 0}))).has_options
    # a foreign message without extra gets task id, publish time and is_auto_fill_extra: general path
    assert decode('{"x": 1}').has_options
    # three keys, but not the base ones
    assert decode('{"x": 1, "extra": {"task_id": "t", "publish_time": 1.0, "countdown": 0}}').has_options


def test_queue_settings_apply_to_a_plain_message():
    calls = []

    def flaky(x):
        calls.append((x, fct.attempt))
        raise ValueError("no")

    c = _consumer(flaky, max_retry_times=2, is_push_to_dlx_queue_when_retry_max_times=False)
    st = _run(c, {"x": 1})
    assert not st.success and st.run_times == 3 and [a for _, a in calls] == [1, 2, 3]
    assert st.exception_type == "ValueError"


def test_per_message_options_override_the_queue_settings():
    calls = []

    def flaky(x):
        calls.append(x)
        raise ValueError("no")

    c = _consumer(flaky, max_retry_times=2, is_push_to_dlx_queue_when_retry_max_times=False)
    st = _run(c, {"x": 1}, max_retry_times=0)
    assert not st.success and st.run_times == 1 and calls == [1]


def test_expiry_and_kill_still_apply():
    ran = []
    c = _consumer(lambda x: ran.append(x), msg_expire_seconds=5)
    env = build_envelope({"x": 1}, publish_time=1.0)  # published long ago, no option of its own
    assert c.execute_inline(Delivery(body=dumps(env), auto_ack=True)) is None and ran == []
    c2 = _consumer(lambda y: ran.append(y))
    env = build_envelope({"y": 2})
    c2.kill_set = {env["extra"]["task_id"]}
    assert c2.execute_inline(Delivery(body=dumps(env), auto_ack=True)) is None and ran == []
    assert _run(c2, {"y": 3}).success and ran == [3]
    # a plain message whose arguments do not fit is dead-lettered, not run
    assert _run(c2, {"z": 4}) is None and ran == [3]
