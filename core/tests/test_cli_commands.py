"""The ``funboost`` command line, run as a subprocess against the sqlite broker with real consumers:
publish / push forms, consume (status line on a terminal and off it), mp_consume, flags set without
user code reaching a running consumer, status, result, jobs, web hand-off, the original's spellings, and
one-line errors with exit status 2."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from funboost.state.base import get_state_backend
from funboost.testing import wait_until

HEARTBEAT = "0.3"  # seconds between consumer heartbeats in these tests (so flags show up quickly)


@pytest.fixture
def project(tmp_path):
    """A user project: cli_tasks.py with one RPC-mode queue on the sqlite broker that keeps status records."""
    q = f"clicmd_{uuid.uuid4().hex[:8]}"
    (tmp_path / "cli_tasks.py").write_text(textwrap.dedent(f"""
        from funboost import boost, BoosterParams, FunctionResultStatusPersistenceConfig

        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite",
                             is_using_rpc_mode=True, max_retry_times=0,
                             function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(
                                 is_save_status=True, is_save_result=True)))
        def add(x, y=0):
            if x == 13:
                raise ValueError("unlucky")
            return x + y
    """))
    return tmp_path, q


def _env(**extra):
    env = {**os.environ, "FUNBOOST_HEARTBEAT_INTERVAL": HEARTBEAT, **extra}
    env.pop("PYTHONPATH", None)
    return env


def _cli(cwd, *args, modules=True):
    """Run ``funboost [-m cli_tasks] ARGS`` in ``cwd`` and wait for it."""
    cmd = [sys.executable, "-m", "funboost", *(["-m", "cli_tasks"] if modules else []), *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60)


def _start(cwd, *args, **popen):
    cmd = [sys.executable, "-m", "funboost", "-m", "cli_tasks", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), **popen)


def _stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def _task_id(r):
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[0]


def _result(task_id):
    return get_state_backend("sqlite").get_result(task_id)


def _consumers(q):
    return get_state_backend("sqlite").live_consumers(q)


def test_publish_push_consume_status_and_result(project, tmp_path_factory):
    cwd, q = project
    ids = {
        "positional": _task_id(_cli(cwd, "push", q, "1", "2")),
        "keyword": _task_id(_cli(cwd, "push", q, "4", "--y=5")),
        "keyword_spaced": _task_id(_cli(cwd, "push", q, "--x", "6", "--y", "1")),
        "legacy_json": _task_id(_cli(cwd, "push", q, '{"x": 10, "y": 1}')),
        "python_literal": _task_id(_cli(cwd, "publish", q, "{'x': 3, 'y': 4}")),
        "failing": _task_id(_cli(cwd, "push", q, "13")),
    }
    custom = _cli(cwd, "publish", q, '{"x": 7}', "--task-id", "my-task-1", "--priority", "1",
                  "--max-retry-times", "0")
    assert _task_id(custom) == "my-task-1"
    later = _task_id(_cli(cwd, "publish", q, '{"x": 8}', "--countdown", "3600"))
    st = json.loads(_cli(cwd, "status", q, "--json").stdout)
    assert st["size"]["delayed"] == 1 and st["size"]["ready"] == 7, st

    out = tmp_path_factory.mktemp("out") / "stdout.txt"
    with open(out, "w") as f:
        consumer = _start(cwd, "consume", q, "--status-interval", "0.2", stdout=f, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: all(_result(t) is not None for t in [*ids.values(), "my-task-1"]), 30)
        expected = {"positional": 3, "keyword": 9, "keyword_spaced": 7, "legacy_json": 11, "python_literal": 7}
        assert {k: _result(ids[k])["result"] for k in expected} == expected
        assert _result("my-task-1")["result"] == 7
        assert _result(ids["failing"])["success"] is False
        assert _result(later) is None  # due in an hour
        # not a terminal: plain, timestamped lines with done / failed / remaining
        wait_until(lambda: "done 7, failed 1, remaining 1" in out.read_text(), 15)
        wait_until(lambda: len(_consumers(q)) == 1, 10)
        text = _cli(cwd, "status", q).stdout
        assert "size: ready 0, in-flight 0, delayed 1" in text and "consumers: 1" in text, text
        assert "FAILED ValueError: unlucky" in text and '{"x": 13}' in text, text
    finally:
        rc = _stop(consumer)
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines[-1].startswith("consume finished: ") and "done 7, failed 1, remaining 1" in lines[-1], lines
    assert all("\r" not in ln and "\x1b" not in ln for ln in lines)

    ok = _cli(cwd, "result", ids["keyword"], modules=False)
    assert ok.returncode == 0 and json.loads(ok.stdout)["result"] == 9
    failed = _cli(cwd, "result", ids["failing"], modules=False)
    assert failed.returncode == 1 and json.loads(failed.stdout)["exception_type"] == "ValueError"
    rec = _cli(cwd, "result", ids["positional"], "--queue", q, modules=False)
    assert rec.returncode == 0 and json.loads(rec.stdout)["params"] == {"x": 1, "y": 2}


def test_publish_wait_prints_the_result(project):
    cwd, q = project
    consumer = _start(cwd, "consume", q, "--no-status", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = _cli(cwd, "publish", q, '{"x": 20, "y": 2}', "--wait", "30")
        assert r.returncode == 0, r.stderr
        task_id, rest = r.stdout.split("\n", 1)
        assert json.loads(rest)["result"] == 22 and json.loads(rest)["task_id"] == task_id
    finally:
        assert _stop(consumer) == 0


def test_flags_set_without_user_code_reach_a_running_consumer(project, tmp_path_factory):
    cwd, q = project
    elsewhere = tmp_path_factory.mktemp("no_user_code")  # cli_tasks is not importable here
    consumer = _start(cwd, "consume", q, "--no-status", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(_consumers(q)) == 1, 15)
        r = _cli(elsewhere, "pause", q, "--wait", "20", modules=False)
        assert r.returncode == 0 and r.stdout.strip() == f"{q}: paused (applied on 1 of 1 live consumer)", \
            (r.stdout, r.stderr)
        assert _consumers(q)[0]["paused"] is True
        pushed = [_task_id(_cli(cwd, "push", q, str(i))) for i in range(3)]
        # paused: none of them runs (a paused consumer may prefetch, so they are ready or in flight)
        size = json.loads(_cli(cwd, "status", q, "--json").stdout)["size"]
        assert size["ready"] + size["in_flight"] == 3, size
        assert _consumers(q)[0]["total_runs"] == 0 and all(_result(t) is None for t in pushed)

        assert _cli(elsewhere, "set-concurrency", q, "3", modules=False).returncode == 0
        wait_until(lambda: _consumers(q)[0]["concurrent_num"] == 3, 10)
        assert _cli(elsewhere, "set_qps", q, "2.5", modules=False).returncode == 0
        wait_until(lambda: _consumers(q)[0]["qps_effective"] == 2.5, 10)
        r = _cli(elsewhere, "set-qps", q, "none", "--wait", "20", modules=False)
        assert r.returncode == 0 and r.stdout.strip() == f"{q}: qps set to no limit (applied on 1 of 1 live consumer)"
        assert _consumers(q)[0]["qps_effective"] is None

        assert _cli(elsewhere, "continue_consume", q, modules=False).returncode == 0  # the original's name
        wait_until(lambda: all(_result(t) is not None for t in pushed), 20)
        assert [_result(t)["result"] for t in pushed] == [0, 1, 2]

        # the broker commands without user code: through the queue catalog the consumer wrote
        r = _cli(elsewhere, "publish", q, '{"x": 5, "y": 1}', "--rpc", "--wait", "30", modules=False)
        assert r.returncode == 0 and json.loads(r.stdout.split("\n", 1)[1])["result"] == 6, (r.stdout, r.stderr)
        t = _task_id(_cli(elsewhere, "push", q, "7", "--y=1", modules=False))
        wait_until(lambda: _result(t) is not None, 20)  # (the queue is in RPC mode: the consumer stores it)
        assert _result(t)["result"] == 8
        st = json.loads(_cli(elsewhere, "status", q, "--json", modules=False).stdout)
        assert st["broker_kind"] == "sqlite" and len(st["consumers"]) == 1 and st["recent_results"], st
        assert _cli(elsewhere, "pause", q, "--wait", "20", modules=False).returncode == 0
        _task_id(_cli(elsewhere, "push", q, "1", modules=False))
        # count is the ready messages: 1, or 0 when the paused consumer had already prefetched it
        assert _cli(elsewhere, "count", q, modules=False).stdout.strip() in ("0", "1")
        size = json.loads(_cli(elsewhere, "status", q, "--json", modules=False).stdout)["size"]
        assert size["ready"] + size["in_flight"] == 1, size
        assert _cli(elsewhere, "clear", q, modules=False).stdout.strip() in ("0", "1")  # 0: prefetched by it
        bad = _cli(elsewhere, "push", q, "1", "--nope=2", modules=False)
        assert bad.returncode == 2 and "unknown ['nope']" in bad.stderr
        assert _cli(elsewhere, "resume", q, modules=False).returncode == 0
    finally:
        assert _stop(consumer) == 0


def test_consume_on_a_terminal_redraws_one_status_line(project):
    cwd, q = project
    for i in range(2):
        _task_id(_cli(cwd, "push", q, str(i)))
    master, slave = pty.openpty()
    consumer = _start(cwd, "consume", q, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""

    def read_some():
        nonlocal seen
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                return seen
            if not chunk:
                break
            seen += chunk
        return seen

    try:
        wait_until(lambda: b"\r\x1b[K" in read_some() and b"done 2, failed 0, remaining 0" in seen, 20)
    finally:
        rc = _stop(consumer)
        read_some()
        os.close(master)
    assert rc == 0
    assert b"consume finished: " in seen
    # the live line is redrawn in place (erase the line, write it, no newline); log lines erase it first
    draws = [seg for seg in seen.split(b"\r\x1b[K") if re.match(rb"\d+\.\d/s, done \d+", seg)]
    assert len(draws) >= 2 and not any(b"\n" in d for d in draws), seen


def test_mp_consume_in_child_processes_with_the_originals_syntax(project, tmp_path_factory):
    cwd, q = project
    pushed = [_task_id(_cli(cwd, "push", q, str(i), "--y=100")) for i in range(4)]
    out = tmp_path_factory.mktemp("out") / "stdout.txt"
    with open(out, "w") as f:
        parent = _start(cwd, "mp_consume", f"--{q}=2", "--status-interval", "0.2", stdout=f,
                        stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: all(_result(t) is not None for t in pushed), 30)
        assert sorted(_result(t)["result"] for t in pushed) == [100, 101, 102, 103]
        wait_until(lambda: len({c["pid"] for c in _consumers(q)}) == 2, 15)
        assert parent.pid not in {c["pid"] for c in _consumers(q)}  # the children consume, not the parent
        # the status line sums the children's heartbeats
        wait_until(lambda: "done 4, failed 0, remaining 0" in out.read_text(), 15)
    finally:
        assert _stop(parent) == 0
    wait_until(lambda: not _consumers(q), 10)  # each child deregistered on its way out


def test_jobs_lists_the_stored_jobs_without_user_code(tmp_path, qname):
    from funboost import ApsJobAdder, BoosterParams, boost

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="sqlite", log_to_console=False))
    def tick(a, b=0):
        return a

    adder = ApsJobAdder(tick, job_store_kind="sqlite", is_auto_start=True, is_auto_paused=True)
    try:
        adder.add_push_job("interval", seconds=30, args=(1,), kwargs={"b": 2}, id="every30", replace_existing=True)
        adder.add_push_job("cron", hour=3, args=(5,), id="nightly", replace_existing=True)
        adder.pause_job("nightly")
        r = _cli(tmp_path, "jobs", modules=False)
        assert r.returncode == 0, r.stderr
        mine = [ln.split("\t") for ln in r.stdout.splitlines() if ln.startswith(qname + "\t")]
        assert {row[1] for row in mine} == {"every30", "nightly"}, r.stdout
        data = json.loads(_cli(tmp_path, "jobs", qname, "--json", modules=False).stdout)
        by_id = {j["id"]: j for j in data}
        assert by_id["every30"]["args"] == [1] and by_id["every30"]["kwargs"] == {"b": 2}
        assert by_id["every30"]["trigger"].startswith("interval[0:00:30]") and by_id["every30"]["next_run_time"]
        assert by_id["nightly"]["next_run_time"] is None  # paused
        assert {j["queue"] for j in data} == {qname}
        empty = _cli(tmp_path, "jobs", "surely_no_such_queue", modules=False)
        assert empty.returncode == 0 and "no jobs" in empty.stdout
    finally:
        adder.remove_all_jobs()
        adder.shutdown()


def test_web_hands_every_argument_to_funboost_web(tmp_path):
    # funboost-web's entry point as the CLI calls it, main(argv) -> int, recording what it got
    pkg = tmp_path / "site" / "funboost_web"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(textwrap.dedent(f"""
        import json
        def main(argv):
            open({str(tmp_path / 'argv.json')!r}, "w").write(json.dumps(argv))
            return 3
    """))
    args = ["web", "--host", "127.0.0.1", "--port", "0", "--help"]
    r = subprocess.run([sys.executable, "-m", "funboost", *args], cwd=tmp_path, capture_output=True, text=True,
                       env={**_env(), "PYTHONPATH": str(tmp_path / "site")}, timeout=60)
    assert r.returncode == 3, r.stderr
    assert json.loads((tmp_path / "argv.json").read_text()) == args[1:]

    import importlib.util
    if importlib.util.find_spec("funboost_web") is None:
        missing = _cli(tmp_path, "web", "--port", "1", modules=False)
        assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
            "funboost: error: funboost web needs the web manager, a separate distribution: pip install funboost-web"]
    else:  # the real funboost-web: its own --help and usage errors come back as they are
        helped = _cli(tmp_path, "web", "--help", modules=False)
        assert helped.returncode == 0 and "usage" in helped.stdout.lower(), helped.stderr
        assert _cli(tmp_path, "web", "--no-such-option", modules=False).returncode == 2


def _fake_web(tmp_path):
    """A funboost_web whose main(argv) records what it got (the CLI's contract with funboost-web)."""
    pkg = tmp_path / "site" / "funboost_web"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(textwrap.dedent(f"""
        import json
        def main(argv):
            open({str(tmp_path / 'argv.json')!r}, "w").write(json.dumps(argv))
            return 0
    """))
    return {**_env(), "PYTHONPATH": str(tmp_path / "site")}


def test_global_options_before_web_apply_to_it(tmp_path):
    env = _fake_web(tmp_path)
    r = subprocess.run([sys.executable, "-m", "funboost", "--state-backend", "redis", "--state-url=redis://h:1/2",
                        "web", "--port", "0"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    # given first: an option repeated after the command (funboost web's own) wins
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "--state-backend", "redis", "--state-url", "redis://h:1/2", "--port", "0"]
    # user code is never imported by the manager: -m before web is an error, not silently ignored
    for opt in (["-m", "cli_tasks"], ["--booster-dirs", "x"], ["--project-root", "."]):
        r = subprocess.run([sys.executable, "-m", "funboost", *opt, "web", "--port", "0"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"funboost: error: {opt[0]} does not apply to web: the web manager imports no user code"], r.stderr


def test_global_state_backend_reaches_the_real_web_manager(tmp_path):
    import importlib.util
    import socket
    if importlib.util.find_spec("funboost_web") is None:
        pytest.skip("funboost-web is not installed")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([sys.executable, "-m", "funboost", "--state-backend", "memory", "web", "--port", str(port),
                          "--admin-password", "long enough 1"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
    finally:
        p.terminate()
        p.communicate(timeout=30)
    assert f"serving http://127.0.0.1:{port}/ (state backend memory)" in first, first


def test_push_keywords_named_like_global_options_reach_the_function(tmp_path):
    """--b is no abbreviation of --booster-dirs, and --state / --state-backend after the command are the
    function's keywords, not the global options."""
    q = f"clikw_{uuid.uuid4().hex[:8]}"
    (tmp_path / "kw_tasks.py").write_text(textwrap.dedent(f"""
        from funboost import boost, BoosterParams

        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite", log_to_console=False))
        def mul(a, b, state=None, state_backend=None, m=None, import_modules=None):
            return a * b
    """))
    cmd = [sys.executable, "-m", "funboost", "-m", "kw_tasks", "push", q, "3", "--b=4", "--state=1",
           "--state-backend=redis", "--import-modules", "x", "--m=2"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from funboost import BoosterParams, boost
    from funboost.message import loads

    @boost(BoosterParams(queue_name=q, broker_kind="sqlite", state_backend="sqlite", log_to_console=False))
    def mul(a, b, state=None, state_backend=None, m=None, import_modules=None):
        return a * b

    got = mul.broker.fetch(1, 5.0)
    mul.broker.ack(got)
    body = loads(got[0].body)
    assert {k: v for k, v in body.items() if k != "extra"} == {
        "a": 3, "b": 4, "state": 1, "state_backend": "redis", "import_modules": "x", "m": 2}


def test_options_are_never_abbreviated(project):
    cwd, q = project
    for args in (("--state-b", "sqlite", "pause", q), ("publish", q, '{"x": 1}', "--count", "5"),
                 ("status", q, "--js"), ("pause", q, "--wa", "1")):
        r = _cli(cwd, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("funboost: error: "), (args, r.stderr)


def test_web_missing_is_one_line_naming_the_distribution(tmp_path):
    # funboost-web not installed: hidden from the import system in this interpreter (None in sys.modules)
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['funboost_web'] = None; "
                        "from funboost.cli import main; raise SystemExit(main(['web', '--port', '1']))"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "funboost: error: funboost web needs the web manager, a separate distribution: pip install funboost-web"]


def test_the_originals_global_options_and_names(tmp_path):
    q = f"clidisc_{uuid.uuid4().hex[:8]}"
    (tmp_path / "tasks_dir").mkdir()
    (tmp_path / "tasks_dir" / "found_tasks.py").write_text(textwrap.dedent(f"""
        from funboost import boost, BoosterParams
        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite"))
        def f(x):
            return x
    """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "funboost", "--booster_dirs_str", "tasks_dir", "--project_root_path",
                        str(tmp_path), "show_all_queues"], cwd=elsewhere, env=_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.split("\t")[0] == q, r.stderr
    (tmp_path / "cli_tasks.py").write_text("import tasks_dir.found_tasks\n")
    r = subprocess.run([sys.executable, "-m", "funboost", "--import_modules_str", "cli_tasks", "push", q, "5"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _cli(tmp_path, "clear", q).stdout.strip() == "1"


@pytest.mark.parametrize("args", [
    ("publish", "{q}", "[1, 2]"),  # not an object
    ("publish", "{q}", '{"x": 1}', "--eta", "tomorrow"),
    ("publish", "{q}", '{"x": 1}', "--countdown", "5", "--eta", "2030-01-01T00:00:00"),
    ("publish", "{q}", '{"x": 1}', "--options", '{"no_such_option": 1}'),
    ("push", "{q}", "1", "2", "3"),  # too many positional arguments
    ("push", "{q}", "1", "--x=2"),  # x twice
    ("push", "{q}", "--y=1", "--y=2"),
    ("set-qps", "{q}", "fast"),
    ("set-qps", "{q}", "-1"),
    ("set-qps", "{q}", "inf"),
    ("set-qps", "{q}", "nan"),
    ("set-concurrency", "{q}", "0"),
    ("mp_consume", "--{q}=zero"),
    ("mp_consume", "{q}", "--processes"),
    ("consume", "{q}", "--processes", "0"),
    ("clear", "{q}", "no_such_queue"),
    ("status", "no_such_queue"),
    ("result", "no_such_task_id"),
    ("jobs", "--store", "memory"),
])
def test_every_new_command_error_is_one_line_and_exit_status_2(project, args):
    cwd, q = project
    r = _cli(cwd, *(a.replace("{q}", q) for a in args))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("funboost: error: "), r.stderr


def test_broker_commands_without_modules_or_catalog_ask_for_m(project):
    cwd, q = project  # no consumer of q has run: the catalog has no record of it
    for args in (("status", q), ("clear", q), ("publish", q, "{}"), ("push", q, "1"), ("count", q)):
        r = _cli(cwd, *args, modules=False)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            f"funboost: error: queue {q!r} is unknown here: no module was imported (-m), and the state backend's "
            f"queue catalog has no record of it (a consumer of the queue writes one when it runs); pass -m "
            f"MODULE, the module that defines its booster"], r.stderr


def test_consume_processes_final_line_counts_tasks_finished_during_the_drain(tmp_path):
    """`consume Q --processes 2` stopped while tasks run: those finish during the children's drain, after their
    last heartbeat; the final line counted only what the heartbeats had shown (done 0 or about half)."""
    q = f"clidrain_{uuid.uuid4().hex[:8]}"
    ran = tmp_path / "ran.txt"
    (tmp_path / "cli_tasks.py").write_text(textwrap.dedent(f"""
        import time
        from funboost import boost, BoosterParams

        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite", concurrent_num=2))
        def slow(i):
            time.sleep(1.0)
            with open({str(ran)!r}, "a") as f:
                f.write(f"{{i}}\\n")
    """))
    for i in range(12):
        assert _cli(tmp_path, "push", q, str(i)).returncode == 0
    out = tmp_path / "stdout.txt"
    env = {**_env(), "FUNBOOST_HEARTBEAT_INTERVAL": "30"}  # the counts must not depend on heartbeats
    with open(out, "w") as f:
        parent = subprocess.Popen([sys.executable, "-m", "funboost", "-m", "cli_tasks", "consume", q, "--processes",
                                   "2", "--status-interval", "0.2"], cwd=tmp_path, env=env, stdout=f,
                                  stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ran.exists() and len(ran.read_text().split()) >= 4, 60, message="4 tasks ran")
    finally:
        assert _stop(parent) == 0  # SIGINT while the next tasks run: they finish during the drain
    done = len(ran.read_text().split())
    final = out.read_text().splitlines()[-1]
    assert final.startswith("consume finished: ") and f"done {done}," in final, (done, final)


def test_cli_consume_of_an_eventlet_module_with_funboost_monkey_patch(tmp_path):
    """The CLI imports funboost before the user's module can monkey-patch: an eventlet module printed a
    traceback at start-up. FUNBOOST_MONKEY_PATCH=eventlet patches before funboost is imported."""
    pytest.importorskip("eventlet")
    q = f"clievl_{uuid.uuid4().hex[:8]}"
    ran = tmp_path / "ran.txt"
    (tmp_path / "cli_tasks.py").write_text(textwrap.dedent(f"""
        import eventlet
        eventlet.monkey_patch()
        from funboost import boost, BoosterParams

        @boost(BoosterParams(queue_name="{q}", broker_kind="sqlite", state_backend="sqlite",
                             concurrent_mode="eventlet"))
        def job(x):
            with open({str(ran)!r}, "a") as f:
                f.write(f"{{x}}\\n")
    """))
    assert _cli(tmp_path, "push", q, "1").returncode == 0
    env = {**_env(), "FUNBOOST_MONKEY_PATCH": "eventlet"}
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "funboost", "-m", "cli_tasks", "consume", q, "--no-status"],
                                cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ran.exists() and ran.read_text().split() == ["1"], 60, message="the task ran")
    finally:
        assert _stop(proc) == 0
    text = out.read_text()
    assert "Traceback" not in text and "monkey_patching" not in text, text
