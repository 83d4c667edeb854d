"""The distribution's dependencies: installed alone in a bare venv, the default (Redis) configuration
works. Before, kombu's Redis transport failed with ``No module named 'packaging'`` (its redis extra
was not required)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid

from conftest import REDIS_URL, check, require

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def test_a_bare_venv_runs_the_default_redis_transport(tmp_path):
    check(REDIS_URL)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # build from copies: a non-editable install writes build/ into the source tree
    junk = shutil.ignore_patterns(".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
    core = shutil.copytree(os.path.join(REPO, "core"), tmp_path / "core", ignore=junk)
    plugin = shutil.copytree(os.path.join(REPO, "plugins", "funboost-celery"), tmp_path / "funboost-celery",
                             ignore=junk)
    install = subprocess.run([py, "-m", "pip", "install", "-q", str(core), str(plugin)],
                             capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        require(f"pip could not install into a fresh venv (no package index?): {install.stderr[-500:]}")
    queue = f"fbcel_venv_{uuid.uuid4().hex[:8]}"
    probe = textwrap.dedent(f"""
        from funboost.plugins.broker import OutgoingMessage
        from funboost_celery import CeleryBroker, CeleryOptions
        b = CeleryBroker({queue!r}, CeleryOptions(broker_url={REDIS_URL!r}))
        try:
            b.publish([OutgoingMessage(body='{{"x": 1, "extra": {{"task_id": "v1"}}}}', task_id="v1")])
            got = b.fetch(1, 10)
            b.ack(got)
            print("fetched", len(got))
        finally:
            b.delete_queue()
            b.close()
    """)
    run = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "fetched 1"
