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


def test_the_readme_wheel_install_works_in_a_fresh_virtualenv(wheels, tmp_path):
    """README "Install", wheel route: a fresh venv gets core + sqlite + the meta-distribution from the wheels
    by file name (third-party libraries from the configured index) and runs a task on the default broker."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    files = [str(wheels[n]) for n in ("funboost-core", "funboost-sqlite", "funboost")]
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", *files], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    script = ("from funboost import boost, BoosterParams\n"
              "@boost(BoosterParams(queue_name='fresh_install', is_using_rpc_mode=True, log_to_console=False))\n"
              "def add(x, y):\n    return x + y\n"
              "add.consume()\nprint(add.push(2, 3).get(timeout=60))\nadd.stop_consume()\n")
    env = {"PATH": "/usr/bin:/bin", "FUNBOOST_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    r = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stdout + r.stderr
    listed = subprocess.run([str(venv / "bin" / "funboost"), "brokers"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert listed.returncode == 0 and "funboost-sqlite" in listed.stdout, listed.stderr


def test_the_contract_suite_runs_from_a_venv_with_only_core_a_plugin_and_pytest(wheels, tmp_path):
    """docs/writing-a-broker-plugin.md: a broker is certified from outside any repository with nothing but
    funboost-core, the plugin and pytest installed (the suite needs no test extra)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    files = [str(wheels[n]) for n in ("funboost-core", "funboost-sqlite")]
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", *files, "pytest"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "outside"
    run_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FUNBOOST_REQUIRE_SERVICES": "1",
           "FUNBOOST_LOG_TO_CONSOLE": "0"}
    r = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--rootdir", str(run_dir),
                        "--pyargs", "funboost.testing.contract", "--funboost-broker", "SQLITE_QUEUE"],
                       capture_output=True, text=True, timeout=900, env=env, cwd=run_dir)
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-5000:] + r.stderr[-3000:]


def test_the_core_wheel_carries_the_whole_plugin_template(wheels):
    """`funboost new-broker` scaffolds from the template inside the installed core: every file of the
    template that git tracks must be in the wheel (its pyproject names a LICENSE file)."""
    template = ROOT / "plugins" / "_template"
    tracked = subprocess.run(["git", "ls-files"], cwd=template, capture_output=True, text=True, check=True)
    expected = {f"funboost/_plugin_template/{p}" for p in tracked.stdout.split()}
    assert expected, "git lists no file of plugins/_template"
    with zipfile.ZipFile(wheels["funboost-core"]) as z:
        missing = expected - set(z.namelist())
    assert not missing, f"the core wheel lacks template files: {sorted(missing)}"


@pytest.mark.parametrize("dist_dir", DISTRIBUTIONS, ids=lambda p: p.name)
def test_every_wheel_ships_py_typed(dist_dir, wheels):
    """Issue 23 item 5: ``py.typed`` in every distribution, so mypy / pyright read the plugins' annotations
    (without it ``import funboost_redis`` is "missing library stubs or py.typed marker")."""
    if dist_dir.name == "_template":
        pytest.skip("the scaffold template (funboost new-broker), not a shipped distribution")
    text = (dist_dir / "pyproject.toml").read_text()
    name = next(line.split('"')[1] for line in text.splitlines() if line.startswith("name = "))
    with zipfile.ZipFile(wheels[name]) as z:
        names = z.namelist()
    packages = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/__init__.py")}
    missing = sorted(p for p in packages if f"{p}/py.typed" not in names)
    assert not missing, f"{name}: no py.typed in {missing}"
