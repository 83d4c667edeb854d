"""Issue 23 item 3: funboost's records reach the application's handlers, funboost prints to the console
only when nobody else does (never twice), and an idle consumer does not repeat "0 runs" lines."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import uuid

from funboost import BoosterParams, boost
from funboost.testing import wait_until

SCRIPT = textwrap.dedent('''
    import logging, sys, threading
    setup, log_file, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    if setup == "file":
        logging.basicConfig(filename=log_file, level=logging.INFO)
    elif setup == "stderr-first":
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="APP %(name)s %(message)s")
    from funboost import BoosterParams, boost

    done = threading.Event()

    @boost(BoosterParams(queue_name=queue, broker_kind="memory", state_backend="memory", max_retry_times=0,
                         user_custom_record_process_info_func=lambda status: done.set()))
    def fails(x):
        raise ValueError(f"boom {x}")

    fails.consume()
    if setup == "stderr-later":  # the application configures logging after funboost set up its loggers
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="APP %(name)s %(message)s")
    fails.push(7)
    assert done.wait(30)
    fails.stop_consume(5)
''')


def _run(tmp_path, setup: str, **env_extra: str):
    queue = f"logprop_{uuid.uuid4().hex[:8]}"
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    log_file = tmp_path / "app.log"
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_LOG_TO_CONSOLE"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, str(script), setup, str(log_file), queue], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out, log_file, queue


def test_basicconfig_file_receives_the_failing_task_error(tmp_path):
    out, log_file, queue = _run(tmp_path, "file")
    text = log_file.read_text()
    assert f"funboost.{queue}" in text and "ValueError: boom 7" in text and "Traceback" in text
    assert "boom 7" not in out.stderr  # the root logger has a handler: funboost prints nothing itself


def test_console_fallback_without_root_handler_prints_each_line_once(tmp_path):
    out, _, queue = _run(tmp_path, "none")
    failure = [line for line in out.stderr.splitlines() if "failed on attempt 1/1" in line]
    assert len(failure) == 1, out.stderr
    assert f"funboost.{queue}" in failure[0]


def test_console_off_prints_nothing_without_any_handler(tmp_path):
    """FUNBOOST_LOG_TO_CONSOLE=0 and no logging set up: Python's last-resort handler printed the task's error
    to stderr anyway (unformatted)."""
    out, _, _ = _run(tmp_path, "none", FUNBOOST_LOG_TO_CONSOLE="0")
    assert "boom 7" not in out.stderr, out.stderr
    out, log_file, _ = _run(tmp_path, "file", FUNBOOST_LOG_TO_CONSOLE="0")  # the application still gets it
    assert "ValueError: boom 7" in log_file.read_text()


def test_no_duplicates_when_the_application_configures_logging_before_or_after(tmp_path):
    for setup in ("stderr-first", "stderr-later"):
        out, _, queue = _run(tmp_path, setup)
        failure = [line for line in out.stderr.splitlines() if "failed on attempt 1/1" in line]
        assert len(failure) == 1, (setup, out.stderr)
        assert failure[0].startswith(f"APP funboost.{queue}"), (setup, out.stderr)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_idle_consumer_does_not_repeat_zero_run_lines(qname):
    ran = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         stats_log_interval=3600))  # the control loop never logs here: the test drives it
    def work(x):
        ran.append(x)

    h = _Collect()
    work.logger.addHandler(h)
    work.consume()
    try:
        work.push(1)
        wait_until(lambda: ran, 10, message="the task ran")
        c = work.consumer
        wait_until(lambda: c.stats.total_runs == 1, 10, message="the run was counted")
        for _ in range(3):
            c._log_stats()
    finally:
        work.stop_consume(5)
    stats = [line for line in h.lines if "runs in the last" in line]
    assert len(stats) == 1 and stats[0].startswith(f"queue {qname!r}: 1 runs"), stats


def test_funboost_loggers_propagate(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory"))
    def f(x):
        return x

    assert f.logger.propagate and logging.getLogger("funboost").propagate
