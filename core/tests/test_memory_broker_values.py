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
    assert got[0] == [1, 2]
    assert sorted(got[1]) == [3, 4] and isinstance(got[1], list)
    assert got[2] == {"k": [5, 6]}


@pytest.mark.parametrize("value", [object(), {(1, 2): 3}, {7: "an int key"}])
def test_what_json_cannot_hold_is_refused_at_push(received, value):
    work, _ = received
    with pytest.raises(PublishArgumentsError, match="JSON"):
        work.push(value)
