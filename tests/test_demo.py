"""scripts/demo.py (run by CI first): prints whole task ids and leaves no temporary folder behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_whole_task_ids_and_removes_its_folder():
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_DATA_DIR"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    ran = [t for t in re.findall(r"ran task (\S+)\s", out.stdout) if not t.startswith("local-")]  # add(1, 2)
    assert len(ran) == 20 and "…" not in out.stdout, out.stdout
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", t) for t in ran), ran
    folder = re.search(r"removed the demo's temporary data folder (\S+)", out.stdout)
    assert folder, out.stdout
    assert not Path(folder.group(1)).exists()
