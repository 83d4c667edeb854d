"""The shipped package type-checks: ``funboost`` declares ``py.typed``, so plugin authors and users run their
type checker against these annotations (the broker seam, the transport primitives, the contract suite), and
the broker template that ``funboost new-broker`` copies type-checks as it is.

Run on the default Python only: mypy's verdict may change with its version, which pip picks per Python."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="checked once, on the default Python 3.11")

CONFIG = Path(__file__).resolve().parents[1] / "pyproject.toml"  # core's [tool.mypy]


def _mypy(tmp_path: Path, cwd: Path, package: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--no-incremental",
           "--cache-dir", str(tmp_path / "cache"), "--show-error-codes", "--no-color-output", "-p", package]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_funboost_package_type_checks(tmp_path: Path) -> None:
    r = _mypy(tmp_path, tmp_path, "funboost")
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout + r.stderr


def test_the_broker_template_type_checks(tmp_path: Path) -> None:
    import funboost
    template_src = Path(funboost.__file__).parent / "_plugin_template" / "src"
    r = _mypy(tmp_path, template_src, "funboost_template")
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout + r.stderr
