"""The documented entry points run as written: the quick-start demo and the README example."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_start_demo_publishes_and_consumes_on_sqlite(tmp_path):
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 20 of 20 tasks consumed; 0 left in the queue" in r.stdout
    assert r.stdout.count("ran task 0") >= 20


def test_readme_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Example\n\n```python\n(.*?)```", readme, re.S).group(1)
    # the example ends by blocking on Ctrl-C; stop it once the awaited result has been printed
    code = code.replace("    ctrl_c_recv()", "    add.stop_consume(5)\n    add.clear()")
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(tmp_path), "FUNBOOST_NO_KEEPALIVE": "1"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "3"
    assert not (tmp_path / "funboost_config.py").exists()  # nothing written into the user's project


def test_meta_distribution_names_every_plugin():
    meta = tomllib.loads((ROOT / "packaging" / "funboost" / "pyproject.toml").read_text())
    assert set(meta["project"]["dependencies"]) >= {"funboost-core>=0.1,<1", "funboost-sqlite>=0.1,<1"}
    plugins = {p.name for p in (ROOT / "plugins").iterdir() if p.name.startswith("funboost-")}
    extras = meta["project"]["optional-dependencies"]
    in_all = {d.split(">")[0] for d in extras["all"]}
    assert plugins - {"funboost-sqlite"} <= in_all, plugins - in_all
