"""The README example runs as written (the final ``ctrl_c_recv()`` replaced by a clean stop)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example(mqtt_options, tmp_path):
    code = re.search(r"## Example\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)  # MQTT
    assert code.rstrip().endswith("ctrl_c_recv()")
    q = f"readme_{uuid.uuid4().hex[:8]}"
    code = code.replace('"mqtt_demo"', repr(q)).replace("concurrent_num=8", "concurrent_num=1").replace(
        "    ctrl_c_recv()", "    import time\n    t = time.monotonic()\n"
        "    while greet.consumer.stats.total_runs < 3 and time.monotonic() - t < 60:\n"
        "        time.sleep(0.05)\n    greet.stop_consume(5)")
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(tmp_path), "FUNBOOST_NO_KEEPALIVE": "1",
           "FUNBOOST_LOG_TO_CONSOLE": "0"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.split()) == sorted("hello ada hello grace hello linus".split())


def test_readme_broadcast_example(mqtt_options, tmp_path):
    code = re.search(r"## Example: MQTT_BROADCAST\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert code.rstrip().endswith("ctrl_c_recv()")
    q = f"readme_{uuid.uuid4().hex[:8]}"
    code = code.replace('"mqtt_news"', repr(q)).replace(
        "    ctrl_c_recv()", "    import time\n    t = time.monotonic()\n"
        "    while on_news.consumer.stats.total_runs < 1 and time.monotonic() - t < 60:\n"
        "        time.sleep(0.05)\n    on_news.stop_consume(5)")
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(tmp_path), "FUNBOOST_NO_KEEPALIVE": "1",
           "FUNBOOST_LOG_TO_CONSOLE": "0"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "news: funboost speaks MQTT"
