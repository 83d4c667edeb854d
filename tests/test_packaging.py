"""Packaging hygiene: every distribution's wheel carries the LICENSE and declares its license in the PEP 639
form (``License-Expression``), built with the pinned build requirements."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [ROOT / "core", ROOT / "packaging" / "funboost",
                 *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())]


def test_repository_license_is_bsd_3_clause():
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    # one pip call for all of them; no build isolation: the env has the pinned setuptools (tox.ini)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), *map(str, DISTRIBUTIONS)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return {w.name.split("-")[0].replace("_", "-"): w for w in out.glob("*.whl")}


@pytest.mark.parametrize("dist_dir", DISTRIBUTIONS, ids=lambda p: p.name)
def test_every_wheel_ships_the_license(dist_dir, wheels):
    text = (dist_dir / "pyproject.toml").read_text()
    assert 'license = "BSD-3-Clause"' in text and 'license-files = ["LICENSE"]' in text
    assert 'requires = ["setuptools>=77,<81"]' in text
    name = next(line.split('"')[1] for line in text.splitlines() if line.startswith("name = "))
    wheel = wheels[name]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert lic, names
        assert z.read(lic[0]).decode() == (ROOT / "LICENSE").read_text()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: BSD-3-Clause" in meta
    assert "License-File: LICENSE" in meta
