"""The memory broker delivers what every other kind delivers: the JSON form of the arguments, checked at
push. It handed the caller's objects over by reference: a list changed after push changed under the
consumer, and sets, bytes and objects reached the function while every other kind refused them."""
import uuid

import pytest

from funboost import BoosterParams, boost
from funboost.exceptions import PublishArgumentsError
from funboost.testing import wait_until


@pytest.fixture
def received():
    got = []

    @boost(BoosterParams(queue_name=f"memvals_{uuid.uuid4().hex[:8]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def work(x):
        got.append(x)

    yield work, got
    work.stop_consume(5)


def test_a_value_changed_after_push_arrives_as_it_was_pushed(received):
    work, got = received
    lst = [1, 2]
    work.push(lst)
    lst.append(99)
    work.push({3, 4})  # a set: sent as a list, as on every kind
    work.push({"k": (5, 6)})
    work.consume()
    wait_until(lambda: len(got) == 3, 10)
    # (50 threads: the three run in any order)
    assert sorted(sorted(x) for x in got if isinstance(x, list)) == [[1, 2], [3, 4]], got  # the set as a list
    assert [1, 2] in got and {"k": [5, 6]} in got, got


@pytest.mark.parametrize("value", [object(), {(1, 2): 3}, {7: "an int key"}])
def test_what_json_cannot_hold_is_refused_at_push(received, value):
    work, _ = received
    with pytest.raises(PublishArgumentsError, match="JSON"):
        work.push(value)


def test_the_plain_value_shortcut_gives_what_the_json_round_trip_gives():
    """envelope_copy skips encoding for plain arguments; for every shape it must equal json_copy (value and
    type, or the same refusal), or the memory kind would again deliver what other kinds do not."""
    import math

    from hypothesis import given, settings, strategies as st

    from funboost.message import envelope_copy, json_copy

    scalars = (st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=8)
               | st.sampled_from(["\ud800", "é", "\x00", "", b"x", (1, 2)]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3), max_leaves=6)
    envelopes = st.dictionaries(st.text(max_size=4) | st.integers(0, 3), values, max_size=4)

    def outcome(copy, env):
        try:
            return "ok", copy(env)
        except TypeError:
            return "refused", None

    def same(a, b):
        if type(a) is not type(b):
            return False
        if isinstance(a, float):
            return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, dict):
            return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        return a == b

    @settings(max_examples=400, deadline=None)
    @given(envelopes)
    def check(env):
        (kind_a, a), (kind_b, b) = outcome(json_copy, env), outcome(envelope_copy, env)
        assert kind_a == kind_b, (env, kind_a, kind_b)
        assert same(a, b), (env, a, b)
        if isinstance(b, dict):  # a copy: nothing the caller changes afterwards reaches the consumer
            assert b is not env and all(b.get(k) is not v for k, v in env.items() if isinstance(v, (dict, list)))

    check()
