"""Arguments and results that orjson alone would not carry exactly: integers beyond 64 bits (orjson refuses
them) and NaN / +-Infinity (orjson writes null). Both codecs, the message's and the state records', write
them as the stdlib does and read them back."""
from __future__ import annotations

import pytest

from funboost.message import decode, dumps, has_non_finite_float, loads
from funboost.records import dumps_state, dumps_state_bytes, loads_state
from funboost.testing.contract.base import same_value as same

VALUES = [2**70, -(2**64) - 1, float("nan"), float("inf"), float("-inf"), [1, float("nan"), {"k": 2**65}],
          {"deep": [[{"x": float("inf")}]]}, None, 1.5, -(2**63), 2**63 - 1, "null", "NaN"]




@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_message_codec_round_trips_exactly(value):
    text = dumps({"x": value, "extra": {"task_id": "t"}})
    assert same(loads(text)["x"], value), text
    assert same(decode(text).kwargs["x"], value), text
    assert same(decode(text.encode()).kwargs["x"], value), text


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_state_codec_round_trips_exactly(value):
    rec = {"result": value, "success": True}
    assert same(loads_state(dumps_state(rec))["result"], value)
    assert same(loads_state(dumps_state_bytes(rec))["result"], value)


def test_none_is_still_null_and_keys_that_are_not_strings_are_refused():
    assert dumps({"x": None}) == '{"x":null}'
    assert not has_non_finite_float({"x": [None, 1.0, {"y": "nan"}]})
    with pytest.raises(TypeError):  # never silently turned into "1"
        dumps({1: "a"})


def test_invalid_json_still_fails():
    with pytest.raises(ValueError):
        loads("not json")
    with pytest.raises(ValueError):
        loads(b"{\"x\": nan}")  # lower-case: neither parser takes it


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_status_batches_keep_arguments_and_results_exactly(value):
    """The engine's batched status records (compact tuples) check only the user's values for NaN."""
    from funboost.records import FunctionResultStatus, StatusBatch, expand_record
    st = FunctionResultStatus("q", "t1", {"x": value}, 1.0)
    st._result, st.success = value, True
    batch = StatusBatch([st.compact(), st.to_dict()])
    for raw in loads_state(batch.json) + [loads_state(row) for row in batch.rows]:
        rec = expand_record(raw)
        assert same(rec["params"]["x"], value) and same(rec["result"], value), rec


@pytest.mark.parametrize("value", [{"0": 2**70, 0: []}, {"a": [2**70, {1: 2}]}])
def test_a_big_integer_does_not_let_a_non_text_dict_key_through(value):
    """orjson refuses a dict key that is not text; an integer beyond 64 bits sent the value to the stdlib
    encoder, which wrote 0 as "0" (here overwriting the key "0" on the way back). orjson stops at the first
    problem: the big integer comes first here."""
    with pytest.raises(TypeError, match="key must be str"):
        dumps(value)
