#!/usr/bin/env python3
"""Certify broker kinds as a user would: per distribution a fresh venv with only funboost-core, that plugin
and pytest (non-editable installs from this checkout), then, from an empty folder outside the repository,

* the contract suite for each kind its tox environment certifies (``--aliases``: also every other name the
  plugin registers), with ``FUNBOOST_REQUIRE_SERVICES=1`` and only the ``FUNBOOST_*`` connection settings
  of that tox environment (the kind's default configuration otherwise);
* a hello-world: ``@boost`` a function, push 3 tasks, consume, wait, ``stop_consume()``, and the process
  must end within 5 seconds of the script's end (no thread left keeping it alive; the non-daemon threads
  still alive at the end are listed).

    python3 scripts/certify.py                    # every distribution (about 20 minutes)
    python3 scripts/certify.py redis kafka --aliases
    python3 scripts/certify.py core               # the memory kind of funboost-core alone

Needs Python 3.11+ (tomllib). Services as for tox (scripts/kafka_service.sh, scripts/mariadb_cdc_service.sh),
and the connection settings tox does not set (FUNBOOST_MYSQL_CDC_PORT=3307). Not part of CI: the tox
environments run the same suite from editable installs; this checks what a user's pip install gives.
"""
from __future__ import annotations

import argparse
import configparser
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = r'''
import sys, threading, time
from funboost import BoosterParams, boost
from funboost.plugins.manager import resolve_broker_kind
kind = sys.argv[1]
caps = resolve_broker_kind(kind).capabilities
done, all_done = [], threading.Event()

@boost(BoosterParams(queue_name=f"certify_hello_{kind.lower()}_{time.time_ns()}", broker_kind=kind))
def hello(x):
    done.append(x)
    if len(done) >= 3:
        all_done.set()

# a broadcast kind keeps nothing for a consumer not listening yet; a server-less transport needs its server
consume_first = caps.broadcast or caps.needs_serving_consumer
if consume_first:
    hello.consume()
for i in range(3):
    hello.push(i)
if not consume_first:
    hello.consume()
ok = all_done.wait(60)
hello.stop_consume()
alive = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
print("HELLO", sorted(done), "non-daemon threads:", alive, flush=True)
print("END_OF_MAIN", time.time(), flush=True)
sys.exit(0 if ok else 1)  # threads still alive here only count if they keep the process from exiting
'''


# extras a user installs for the server the tox environment's settings name (sqlalchemy: a MariaDB URL)
EXTRAS = {"sqlalchemy": "[mysql]"}


def tox_env(dist: str) -> tuple[list[str], dict[str, str]]:
    """Kinds certified by the distribution's tox environment and its FUNBOOST_* settings."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    section = ini[f"testenv:{dist.replace('-', '_')}"]
    kinds = re.findall(r"--funboost-broker (\S+)", section.get("commands", ""))
    env = dict(re.findall(r"^\s*(FUNBOOST_\w+)\s*=\s*(\S+)\s*$", section.get("set_env", ""), re.M))
    env.pop("FUNBOOST_TEST_BROKERS", None)
    return kinds, env


def registered_names(dist: str) -> list[str]:
    data = tomllib.loads((ROOT / "plugins" / f"funboost-{dist}" / "pyproject.toml").read_text())
    return list(data["project"].get("entry-points", {}).get("funboost.brokers", {}))


def make_venv(dist: str, base: Path) -> Path:
    venv = base / dist
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pkgs = [str(ROOT / "core")]
    if dist != "core":
        data = tomllib.loads((ROOT / "plugins" / f"funboost-{dist}" / "pyproject.toml").read_text())
        # funboost distributions a plugin requires are not on PyPI: install them from the checkout too
        for req in data["project"]["dependencies"]:
            name = re.match(r"[\w-]+", req).group(0)
            if name.startswith("funboost-") and name != "funboost-core":
                pkgs.append(str(ROOT / "plugins" / name))
        pkgs.append(str(ROOT / "plugins" / f"funboost-{dist}") + EXTRAS.get(dist, ""))
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs, "pytest"], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"pip install for {dist} failed:\n{r.stdout}\n{r.stderr}")
    return venv


def run_contract(venv: Path, kind: str, env: dict[str, str]) -> tuple[bool, str, float]:
    extra = ["-p", "no:pytest_nameko"] if kind.lower() == "nameko" else []
    with tempfile.TemporaryDirectory(prefix="certify-") as d:
        start = time.monotonic()
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                            "--rootdir", d, *extra, "--pyargs", "funboost.testing.contract", "--funboost-broker", kind],
                           cwd=d, env=env, capture_output=True, text=True)
        took = time.monotonic() - start
    lines = r.stdout.strip().splitlines()
    if r.returncode:
        print(r.stdout[-6000:], r.stderr[-3000:], sep="\n")
    return r.returncode == 0, lines[-1] if lines else r.stderr.strip()[-200:], took


def run_hello(venv: Path, kind: str, env: dict[str, str]) -> tuple[bool, str, float]:
    with tempfile.TemporaryDirectory(prefix="certify-hello-") as d:
        start = time.monotonic()
        try:
            r = subprocess.run([str(venv / "bin" / "python"), "-c", HELLO, kind], cwd=d, env=env,
                               capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return False, "did not exit within 120 s", time.monotonic() - start
        ended = time.time()
        took = time.monotonic() - start
    m = re.search(r"END_OF_MAIN ([\d.]+)", r.stdout)
    exit_after = ended - float(m.group(1)) if m else float("nan")
    hello = next((line for line in r.stdout.splitlines() if line.startswith("HELLO")), r.stderr.strip()[-300:])
    ok = r.returncode == 0 and exit_after < 5.0
    return ok, f"{hello}; exited {exit_after:.2f}s after the script's end", took


def main() -> int:
    plugins = sorted(p.name[len("funboost-"):] for p in (ROOT / "plugins").glob("funboost-*")
                     if (p / "pyproject.toml").exists() and "funboost.brokers" in (p / "pyproject.toml").read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dists", nargs="*", help=f"core and/or plugins: {' '.join(plugins)} (default: all)")
    ap.add_argument("--aliases", action="store_true", help="also every other name each plugin registers")
    ap.add_argument("--no-hello", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="funboost-certify-venvs-"))
    rows: list[tuple[str, str, bool, str, float]] = []
    for dist in args.dists or ["core", *plugins]:
        kinds, settings = (["memory"], {}) if dist == "core" else tox_env(dist)
        main_kinds = list(kinds)
        if args.aliases and dist != "core":
            kinds += [n for n in registered_names(dist) if n.lower() not in {k.lower() for k in kinds}]
        env = {**os.environ, **settings, "FUNBOOST_REQUIRE_SERVICES": "1", "FUNBOOST_LOG_TO_CONSOLE": "0"}
        venv = make_venv(dist, base)
        for kind in kinds:
            ok, summary, took = run_contract(venv, kind, env)
            rows.append((kind, "contract", ok, summary, took))
            print(f"{kind:<28} contract {'PASS' if ok else 'FAIL'} {took:6.1f}s  {summary}", flush=True)
        # mysql_cdc's messages are binlog rows: nothing to push (its own tests write rows after consume())
        for kind in [] if args.no_hello or dist == "mysql-cdc" else main_kinds:
            ok, summary, took = run_hello(venv, kind, env)
            rows.append((kind, "hello", ok, summary, took))
            print(f"{kind:<28} hello    {'PASS' if ok else 'FAIL'} {took:6.1f}s  {summary}", flush=True)
    failed = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
