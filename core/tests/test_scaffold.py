"""``funboost new-broker NAME``: a renamed copy of the plugin template that the contract suite certifies."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from funboost.cli import main
from funboost.scaffold import TEMPLATE_DIR, PluginNames, ScaffoldError, new_broker_plugin


def test_names_are_derived_from_the_broker_name():
    n = PluginNames.from_name("My-Queue")
    assert (n.kind, n.distribution, n.package, n.class_prefix, n.env_prefix) == \
        ("my_queue", "funboost-my-queue", "funboost_my_queue", "MyQueue", "FUNBOOST_MY_QUEUE")
    assert PluginNames.from_name("funboost-nats").kind == "nats"
    for bad in ("", "1abc", "a b", "Ä", "x--y"):
        with pytest.raises(ScaffoldError):
            PluginNames.from_name(bad)


def test_new_broker_renames_everything_and_copies_no_build_output(tmp_path):
    # build output that an editable install leaves in a template must never be copied
    fake = tmp_path / "template"
    subprocess.run(["cp", "-r", str(TEMPLATE_DIR) + "/.", str(fake)], check=True)
    (fake / "src" / "funboost_template.egg-info").mkdir(exist_ok=True)
    (fake / "src" / "funboost_template.egg-info" / "PKG-INFO").write_text("x")
    (fake / "build" / "lib").mkdir(parents=True, exist_ok=True)
    (fake / "build" / "lib" / "junk.py").write_text("x")
    out = new_broker_plugin("my-queue", tmp_path / "out", template=fake)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["LICENSE", "README.md", "pyproject.toml", "src/funboost_my_queue/__init__.py",
                     "src/funboost_my_queue/broker.py", "src/funboost_my_queue/py.typed", "tests/test_contract.py"]
    text = "\n".join((out / f).read_text() for f in files)
    for old in ("funboost_template", "funboost-template", "template_dir", "DirectoryBroker", "FUNBOOST_TEMPLATE"):
        assert old not in text
    assert 'name = "funboost-my-queue"' in text
    assert 'my_queue = "funboost_my_queue.broker:MyQueueBroker"' in text
    with pytest.raises(ScaffoldError, match="not empty"):
        new_broker_plugin("my-queue", out, template=fake)


def test_cli_scaffolds_a_plugin_the_contract_suite_certifies(tmp_path, capsys):
    assert main(["new-broker", "scaffolded", "--dest", str(tmp_path / "plugin")]) == 0
    assert "created" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["new-broker", "not valid!"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("funboost: error: invalid broker name") and err.count("\n") == 1
    src = tmp_path / "plugin" / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
           "FUNBOOST_LOG_TO_CONSOLE": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "funboost.testing.contract",
         "--funboost-broker", "funboost_scaffolded.broker:ScaffoldedBroker", "-k",
         "registration or publish or requeue or persistence or dead_letter"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
