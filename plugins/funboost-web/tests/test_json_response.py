"""The manager's JSON API answers records that hold NaN / Infinity (funboost keeps them exactly in arguments
and results; Starlette's JSON refuses them, which was a 500)."""
from __future__ import annotations

import json

from funboost_web.app import JSONResponse


def test_non_finite_floats_are_sent_as_text():
    body = JSONResponse({"result": float("nan"), "params": {"x": [float("inf"), float("-inf"), 1.5]}, "n": 2**70}).body
    assert json.loads(body) == {"result": "nan", "params": {"x": ["inf", "-inf", 1.5]}, "n": 2**70}


def test_ordinary_records_are_unchanged():
    content = {"result": 1.5, "params": {"x": None, "s": "NaN"}, "ok": True}
    assert json.loads(JSONResponse(content).body) == content
