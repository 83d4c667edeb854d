"""Both README examples run as written (the final ``ctrl_c_recv()`` replaced by a clean stop)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def example(title: str) -> str:
    m = re.search(rf"## Example: {re.escape(title)}\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert m, f"README has no example {title!r}"
    return m.group(1)


def run(code: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(tmp_path), "FUNBOOST_NO_KEEPALIVE": "1",
           "FUNBOOST_LOG_TO_CONSOLE": "0"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_jetstream_example(nats_url, tmp_path):
    q = f"readme_{uuid.uuid4().hex[:8]}"
    # one thread, so that the prints of concurrent tasks cannot interleave inside a line
    code = example("NATS_JETSTREAM").replace('"nats_demo"', repr(q)).replace("concurrent_num=8", "concurrent_num=1").replace(
        "    ctrl_c_recv()", "    import time\n    while square.broker.queue_size().total:\n        time.sleep(0.05)\n"
        "    square.stop_consume(5)\n    square.broker.delete_stream()")
    out = run(code, tmp_path)
    assert sorted(re.findall(r"\d+\^2 = \d+", out)) == sorted(f"{x}^2 = {x * x}" for x in range(10))


def test_core_example(nats_url, tmp_path):
    q = f"readme_{uuid.uuid4().hex[:8]}"
    code = example("NATS_CORE with sync_call").replace('"nats_rpc_demo"', repr(q)).replace(
        "    ctrl_c_recv()", "    add.stop_consume(5)")
    assert run(code, tmp_path).strip().splitlines()[0] == "3"


@pytest.mark.parametrize("title", ["NATS_JETSTREAM", "NATS_CORE with sync_call"])
def test_examples_end_with_ctrl_c_recv(title):
    assert example(title).rstrip().endswith("ctrl_c_recv()")
