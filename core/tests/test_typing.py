"""Typed boosters: ``@boost`` keeps the function's signature (``Booster[P, R]``), so mypy checks
``f.push(...)`` / ``f(...)`` against it and knows ``AsyncResult[R]``."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

HERE = Path(__file__).parent / "typing"


def _mypy(tmp_path, *files):
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
           "--no-error-summary", "--show-error-codes", "--hide-error-context", "--no-color-output",
           *(str(HERE / f) for f in files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_a_correctly_typed_file_passes(tmp_path):
    r = _mypy(tmp_path, "typed_ok.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_wrong_arguments_and_result_types_are_reported(tmp_path):
    r = _mypy(tmp_path, "typed_wrong.py")
    assert r.returncode == 1, r.stdout + r.stderr
    source = (HERE / "typed_wrong.py").read_text().splitlines()
    expected = {i + 1 for i, line in enumerate(source) if "# WRONG" in line}
    reported = {int(m.group(1)) for m in re.finditer(r"typed_wrong\.py:(\d+): error", r.stdout)}
    assert reported == expected, r.stdout
