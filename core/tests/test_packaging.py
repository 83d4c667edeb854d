"""Packaging hygiene: SQLAlchemy is an extra of funboost-core, and what needs it says so."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import requires


def test_sqlalchemy_is_an_extra_not_a_requirement():
    reqs = requires("funboost-core") or []
    sa = [r for r in reqs if r.lower().startswith("sqlalchemy")]
    assert sa, reqs
    assert all('extra == "sqlalchemy"' in r for r in sa), sa


def _run_without_sqlalchemy(code: str) -> subprocess.CompletedProcess:
    # sys.modules[name] = None makes every import of it fail, as in an environment without SQLAlchemy
    prog = "import sys\nsys.modules['sqlalchemy'] = None\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)


def test_features_that_need_sqlalchemy_name_the_extra(tmp_path):
    out = _run_without_sqlalchemy(f'''
        import os
        os.environ["FUNBOOST_DATA_DIR"] = {str(tmp_path)!r}
        import funboost  # the core imports without SQLAlchemy
        from funboost import ApsJobAdder, BoosterParams, boost
        @boost(BoosterParams(queue_name="nosa_q", broker_kind="memory", state_backend="memory"))
        def f(x):
            return x
        for kind in ("sqlite", "sqlalchemy"):
            try:
                ApsJobAdder(f, job_store_kind=kind)
            except ImportError as exc:
                print("job store:", exc)
        from funboost.state.base import get_state_backend
        try:
            get_state_backend("sqlalchemy")
        except Exception as exc:
            print("state:", exc)
    ''')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout + out.stderr
    assert all("funboost-core[sqlalchemy]" in line for line in lines), out.stdout
