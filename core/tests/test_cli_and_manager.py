"""The command line against a user's module, and BoostersManager's registry helpers."""
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from funboost import BoosterParams, BoostersManager, boost
from funboost.testing import wait_until


@pytest.fixture
def tasks_module(tmp_path):
    q = f"cli_{uuid.uuid4().hex[:8]}"
    (tmp_path / "cli_tasks.py").write_text(textwrap.dedent(f"""
        from funboost import boost, BoosterParams

        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite", log_to_console=False))
        def double(x):
            return 2 * x
    """))
    return tmp_path, q


def _cli(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-m", "funboost", "-m", "cli_tasks", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_push_count_pause_resume_clear(tasks_module):
    cwd, q = tasks_module
    r = _cli(cwd, "queues")
    assert r.returncode == 0 and q in r.stdout, r.stderr
    for i in range(3):
        r = _cli(cwd, "push", q, json.dumps({"x": i}))
        assert r.returncode == 0 and len(r.stdout.strip()) == 36, r.stderr  # a UUID task id
    assert _cli(cwd, "count", q).stdout.strip() == "3"
    assert _cli(cwd, "pause", q).returncode == 0
    from funboost.state.base import get_state_backend
    assert get_state_backend("sqlite").get_flags(q)["pause"] is True
    assert _cli(cwd, "resume", q).returncode == 0
    assert get_state_backend("sqlite").get_flags(q)["pause"] is False
    assert _cli(cwd, "clear", q).stdout.strip() == "3"
    assert _cli(cwd, "count", q).stdout.strip() == "0"
    bad = _cli(cwd, "count", "no_such_queue")
    assert bad.returncode == 2 and "queue 'no_such_queue' is unknown here" in bad.stderr


def test_manager_lookup_build_and_group_consume(qname):
    done = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", booster_group="g1",
                         log_to_console=False))
    def a(x):
        done.append(("a", x))

    def b_func(x):
        done.append(("b", x))

    b = BoostersManager.build_booster(BoosterParams(queue_name=qname + "_b", broker_kind="memory",
                                                    state_backend="memory", booster_group="g1",
                                                    consuming_function=b_func, log_to_console=False))
    assert BoostersManager.get_booster(qname) is a
    assert BoostersManager.build_booster(b.params) is b  # idempotent
    assert qname in BoostersManager.get_all_queues()
    BoostersManager.push(qname, 1)
    BoostersManager.publish(qname + "_b", {"x": 2})
    BoostersManager.consume_group("g1")
    try:
        wait_until(lambda: sorted(done) == [("a", 1), ("b", 2)], 10)
    finally:
        a.stop_consume(5)
        b.stop_consume(5)
    with pytest.raises(KeyError, match="no booster"):
        BoostersManager.get_booster("surely_not_registered")


@pytest.mark.parametrize("args", [
    ("push", "{q}", '{"y": 1}'),  # an argument the function does not take
    ("push", "{q}", '{"x": 1'),  # not JSON
    ("push", "{q}"),  # the message is missing
    ("push", "no_such_queue", '{"x": 1}'),
    ("no-such-command",),
    ("consume", "{q}", "--processes", "two"),
])
def test_every_cli_error_is_one_line_and_exit_status_2(tasks_module, args):
    cwd, q = tasks_module
    r = _cli(cwd, *(q if a == "{q}" else a for a in args))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("funboost: error: "), r.stderr


def test_cli_error_for_a_module_that_does_not_import(tmp_path):
    (tmp_path / "cli_tasks.py").write_text("raise RuntimeError('broken at import')\n")
    r = _cli(tmp_path, "queues")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "funboost: error: cannot import module 'cli_tasks' (-m): RuntimeError: broken at import"]
