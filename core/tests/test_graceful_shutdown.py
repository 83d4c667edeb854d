"""Graceful SIGTERM / SIGINT, with real worker processes, real brokers and real signals.

A worker script (written to a temporary folder) consumes a queue whose tasks take a while; the test
sends a signal while a task runs and checks: exit status 0, the running task finished, everything that
did not finish is *ready* in the queue again right after the exit (no liveness timeout), one summary log
line; a second signal ends the process at once; a multi-process parent forwards SIGINT and exits 0 once
its children drained, without tracebacks.

Brokers: sqlite (always, when funboost-sqlite is installed) and redis_ack_able (when funboost-redis is
installed and Redis answers). Concurrency modes: threading, async, single_thread, and gevent / eventlet
when installed (their tox envs run this module).
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from funboost import BoosterParams, boost
from funboost.keepalive import THREADS_STOP_AT_SCRIPT_END
from funboost.testing import wait_until

# the worker scripts end after consume() and rely on the keep-alive wait at exit
script_end = pytest.mark.skipif(THREADS_STOP_AT_SCRIPT_END, reason="CPython 3.12.0-3.12.2 start no thread after "
                                "the main script ends (gh-113964, fixed in 3.12.3)")

WORKER = textwrap.dedent('''
    import json, os, sys
    # run as a script (argv) or imported by the funboost CLI (the same values in an environment variable)
    args = sys.argv[1:8] if len(sys.argv) >= 8 else json.loads(os.environ["GSHUT_WORKER_ARGS"])
    mode, broker, queue, marks, task_seconds, qps, processes = args
    if mode == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif mode == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    import asyncio, pathlib, time
    from funboost import BoosterParams, boost

    marks = pathlib.Path(marks)
    params = BoosterParams(queue_name=queue, broker_kind=broker, concurrent_mode=mode, concurrent_num=2,
                           qps=float(qps) or None, state_backend="memory",
                           shutdown_timeout=float(os.environ.get("GSHUT_SHUTDOWN_TIMEOUT", "60")))

    if mode == "async":
        @boost(params)
        async def slow(i):
            (marks / f"started-{i}").touch()
            await asyncio.sleep(float(task_seconds))
            (marks / f"done-{i}").touch()
    else:
        @boost(params)
        def slow(i):
            (marks / f"started-{i}").touch()
            time.sleep(float(task_seconds))
            (marks / f"done-{i}").touch()

    if __name__ == "__main__":
        if int(processes) > 1:
            slow.multi_process_consume(int(processes))
        else:
            slow.consume()
        print("main script ended", flush=True)
''')


def _redis_ok() -> bool:
    if importlib.util.find_spec("funboost_redis") is None:
        return False
    try:
        import redis
        redis.Redis(socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


BROKERS = [
    pytest.param("sqlite", marks=pytest.mark.skipif(importlib.util.find_spec("funboost_sqlite") is None,
                                                    reason="funboost-sqlite not installed")),
    pytest.param("redis_ack_able", marks=pytest.mark.skipif(not _redis_ok(), reason="funboost-redis or Redis missing")),
]


def _mode_param(mode: str, module: str = ""):
    if not module:
        return pytest.param(mode)
    return pytest.param(mode, marks=pytest.mark.skipif(importlib.util.find_spec(module) is None,
                                                       reason=f"{module} not installed"))


MODES = [_mode_param("threading"), _mode_param("async"), _mode_param("single_thread"),
         _mode_param("gevent", "gevent"), _mode_param("eventlet", "eventlet")]


class Worker:
    def __init__(self, tmp_path: Path, mode: str, broker: str, task_seconds: float, qps: float = 0,
                 processes: int = 1) -> None:
        self.queue = f"gshut_{mode}_{uuid.uuid4().hex[:10]}"
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        self.stderr_path = tmp_path / "stderr.txt"
        self.stdout_path = tmp_path / "stdout.txt"
        env = {k: v for k, v in os.environ.items() if k not in ("FUNBOOST_NO_KEEPALIVE", "FUNBOOST_LOG_TO_CONSOLE")}
        env["FUNBOOST_SQLITE_DIR"] = str(tmp_path / "sqlite")
        env["PYTHONWARNINGS"] = "ignore"
        self.args = [sys.executable, str(script), mode, broker, self.queue, str(self.marks), str(task_seconds),
                     str(qps), str(processes)]
        self.env = env
        os.environ["FUNBOOST_SQLITE_DIR"] = env["FUNBOOST_SQLITE_DIR"]  # the test's own producer: same files
        self.booster = boost(BoosterParams(queue_name=self.queue, broker_kind=broker, state_backend="memory",
                                           log_to_console=False))(_noop)
        self.proc: "subprocess.Popen | None" = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.stdout_path.open("w"),
                                     stderr=self.stderr_path.open("w"))

    def start_cli(self, *cli_args: str) -> None:
        """``funboost -m worker consume QUEUE ...`` with the worker module importable from its folder."""
        import json
        env = {**self.env, "GSHUT_WORKER_ARGS": json.dumps(self.args[2:]),
               "PYTHONPATH": os.pathsep.join([str(Path(self.args[1]).parent), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "funboost", "-m", "worker", "consume", self.queue,
                                      *cli_args], env=env, stdout=self.stdout_path.open("w"),
                                     stderr=self.stderr_path.open("w"))

    def started(self) -> set[str]:
        return {p.name.split("-", 1)[1] for p in self.marks.glob("started-*")}

    def done(self) -> set[str]:
        return {p.name.split("-", 1)[1] for p in self.marks.glob("done-*")}

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def ready(self) -> int:
        size = self.booster.queue_size()
        return size.ready

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:
            self.booster.clear()
        finally:
            self.booster.broker.close()


def _noop(i):  # the producer side of the queue in the test process
    return i


@pytest.fixture
def make_worker(tmp_path):
    made = []

    def make(*args, **kwargs) -> Worker:
        w = Worker(tmp_path, *args, **kwargs)
        made.append(w)
        return w
    yield make
    old = os.environ.pop("FUNBOOST_SQLITE_DIR", None)
    for w in made:
        w.cleanup()
    del old


@script_end
@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_drains_running_task_and_hands_back_the_rest(make_worker, broker, mode):
    total = 5
    # qps 0.5: the second message is fetched and then waits ~2 s for its rate slot: a prefetched message
    # that has not started when the signal comes
    w = make_worker(mode, broker, task_seconds=3, qps=0.5)
    for i in range(total):
        w.booster.push(i)
    w.start()
    wait_until(lambda: w.started(), 60, message="first task started")
    if mode != "single_thread":  # single_thread runs inline: it never fetches ahead
        wait_until(lambda: w.ready() <= total - 2, 30, message="second message prefetched")
    w.proc.send_signal(signal.SIGTERM)
    rc = w.wait_exit(60)
    err = w.stderr()
    assert rc == 0, err
    assert w.started() and w.started() <= w.done(), f"a running task was cut off\n{err}"
    # nothing in flight: every message that did not finish is ready again, without any liveness wait
    assert w.ready() == total - len(w.done()), err
    summary = [line for line in err.splitlines() if "SIGTERM: stopped consuming" in line]
    assert len(summary) == 1, err
    assert f"{len(w.done())} running task(s) finished" in summary[0]
    assert "Traceback" not in err


@script_end
@pytest.mark.parametrize("mode", MODES)
def test_a_task_cut_off_at_shutdown_timeout_ends_quietly_and_stays_unacknowledged(make_worker, mode):
    """Past shutdown_timeout the running task is cut off: exit 0, the summary line and nothing after it (async
    mode logged a traceback per cut-off coroutine and 'Task was destroyed but it is pending!'); its message
    is not acknowledged (the broker hands it back)."""
    w = make_worker(mode, "sqlite", task_seconds=60)
    w.env["GSHUT_SHUTDOWN_TIMEOUT"] = "1"
    w.booster.push(1)
    w.start()
    wait_until(lambda: w.started(), 60, message="task started")
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit(60) == 0, w.stderr()
    err = w.stderr()
    assert "1 cut off" in err or "cut off" in err, err
    for bad in ("Traceback", "uncaught error", "Task was destroyed", "was never awaited"):
        assert bad not in err, err
    size = w.booster.queue_size()  # not acknowledged: in flight until a consumer reclaims it (or ready)
    assert size.ready + (size.in_flight or 0) == 1, size


@script_end
@pytest.mark.parametrize("broker", BROKERS[:1])
def test_second_signal_exits_at_once(make_worker, broker):
    w = make_worker("threading", broker, task_seconds=300)
    w.booster.push(1)
    w.start()
    wait_until(lambda: w.started(), 60, message="task started")
    w.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in w.stderr(), 30, message="first signal handled")
    w.proc.send_signal(signal.SIGTERM)
    rc = w.wait_exit(30)  # the task would run for 300 s: only an immediate exit gets here
    assert rc == 128 + signal.SIGTERM
    assert not w.done()
    assert "exiting now" in w.stderr()


@script_end
@pytest.mark.parametrize("how", ["api", "cli"])
@pytest.mark.parametrize("broker", BROKERS)
def test_multi_process_sigint_to_parent_drains_children(make_worker, broker, how):
    w = make_worker("threading", broker, task_seconds=3, processes=2)
    for i in range(6):
        w.booster.push(i)
    if how == "api":
        w.start()  # multi_process_consume(2), then the script ends
    else:
        w.start_cli("--processes", "2")
    wait_until(lambda: len(w.started()) >= 2, 60, message="both children running a task")
    w.proc.send_signal(signal.SIGINT)
    rc = w.wait_exit(120)
    err = w.stderr()
    assert rc == 0, err
    assert w.started() <= w.done(), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert w.ready() == 6 - len(w.done()), err
    assert "2 child process(es) drained and exited" in err, err


@script_end
def test_consume_returns_and_process_ends_when_script_ends(tmp_path):
    """The keep-alive wait runs in the main thread at exit; stop_consume from another thread ends it.
    Under eventlet the old keep-alive thread made consume() hang (issue 14)."""
    modes = ["threading"] + [m for m in ("gevent", "eventlet") if importlib.util.find_spec(m)]
    for mode in modes:
        script = tmp_path / f"ka_{mode}.py"
        script.write_text(textwrap.dedent(f'''
            import sys
            if "{mode}" == "gevent":
                from gevent import monkey; monkey.patch_all()
            elif "{mode}" == "eventlet":
                import eventlet; eventlet.monkey_patch()
            import threading
            from funboost import BoosterParams, boost
            @boost(BoosterParams(queue_name="ka_{mode}_{uuid.uuid4().hex[:8]}", broker_kind="memory",
                                 concurrent_mode="{mode}", state_backend="memory"))
            def f(x):
                print("ran", x, flush=True)
                threading.Thread(target=f.stop_consume, args=(5,)).start()  # then the process may end
            f.consume()
            print("consume returned", flush=True)
            f.push(1)
        '''))
        env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_NO_KEEPALIVE"}
        env["PYTHONWARNINGS"] = "ignore"
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "consume returned" in out.stdout and "ran 1" in out.stdout, (mode, out.stdout, out.stderr)


def test_sigterm_while_main_thread_runs_user_code(tmp_path):
    """A script that keeps its main thread busy in its own loop still drains and exits 0."""
    marks = tmp_path / "m"
    marks.mkdir()
    script = tmp_path / "loop.py"
    q = f"gshut_loop_{uuid.uuid4().hex[:8]}"
    script.write_text(textwrap.dedent(f'''
        import pathlib, time
        from funboost import BoosterParams, boost
        marks = pathlib.Path({str(marks)!r})
        @boost(BoosterParams(queue_name={q!r}, broker_kind="memory", state_backend="memory"))
        def slow(i):
            (marks / "started").touch()
            time.sleep(2)
            (marks / "done").touch()
        slow.consume()
        slow.push(1)
        while True:
            time.sleep(0.5)
    '''))
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_NO_KEEPALIVE"}
    p = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_until(lambda: (marks / "started").exists(), 60, message="task started")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert (marks / "done").exists()
    assert "Traceback" not in err


def test_exit_waits_of_plugins_run_when_the_drain_ends_the_process(tmp_path):
    """The drain above ends the process with os._exit (the user's loop never returns), which skips atexit: a
    plugin's wait for messages it still holds (mqtt's parked messages) registers with on_graceful_exit and
    runs after the consumers are drained."""
    marks = tmp_path / "m"
    marks.mkdir()
    script = tmp_path / "loop.py"
    q = f"gshut_exitwait_{uuid.uuid4().hex[:8]}"
    script.write_text(textwrap.dedent(f'''
        import atexit, pathlib, time
        from funboost import BoosterParams, boost
        from funboost.keepalive import on_graceful_exit
        marks = pathlib.Path({str(marks)!r})
        on_graceful_exit(lambda: (marks / "exit-wait").touch())
        atexit.register(lambda: (marks / "atexit").touch())
        @boost(BoosterParams(queue_name={q!r}, broker_kind="memory", state_backend="memory"))
        def f(i):
            (marks / "ran").touch()
        f.consume()
        f.push(1)
        while True:
            time.sleep(0.5)
    '''))
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_NO_KEEPALIVE"}
    p = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_until(lambda: (marks / "ran").exists(), 60, message="task ran")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert (marks / "exit-wait").exists(), err
    assert not (marks / "atexit").exists()  # (why the hook exists: atexit did not run)



RACE_SCRIPT = textwrap.dedent('''
    import signal, sys, threading, time
    from funboost import AbstractConsumer, BoosterParams, boost, keepalive

    keepalive.mark_main_waiting(True)  # as in a multi-process child: the drain runs where the test says
    import io, logging
    capture = io.StringIO()
    logging.getLogger("funboost.shutdown").addHandler(logging.StreamHandler(capture))

    class SignalledWhileStarting(AbstractConsumer):
        """A SIGINT lands while consume() is still starting: the drain begins in another thread."""
        def start(self):
            super().start()
            keepalive._shutdown.signum = signal.SIGINT
            keepalive._shutdown.requested.set()
            threading.Thread(target=keepalive.graceful_stop, kwargs={"timeout": 5}).start()
            deadline = time.monotonic() + 10
            while not keepalive._shutdown.drain_lock.locked():  # the drain has begun
                assert time.monotonic() < deadline, "the drain never started"
                time.sleep(0.01)

    @boost(BoosterParams(queue_name=sys.argv[1], broker_kind="memory", state_backend="memory",
                         consumer_override_cls=SignalledWhileStarting))
    def f(x):
        return x

    f.consume()  # used to deadlock: it installed the handlers under its lock while the drain waited for it
    assert keepalive._shutdown.done.wait(10), "the drain did not finish"
    assert "stopped consuming" in capture.getvalue(), "the consumer started during the drain was not stopped"
    assert f.consumer is None
    f.consume()  # once the process is shutting down, a consume() does not start a consumer
    assert f.consumer is None
    print("OK")
''')


def test_consume_racing_a_shutdown_request_never_leaves_a_consumer_running(tmp_path):
    """A signal that lands while a process is still starting its consumers (a multi-process child
    forwarded SIGINT during its consume()) used to deadlock the drain against consume(): the child never
    exited and the parent killed it."""
    script = tmp_path / "race.py"
    script.write_text(RACE_SCRIPT)
    out = subprocess.run([sys.executable, str(script), f"race_{uuid.uuid4().hex[:8]}"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "FUNBOOST_NO_KEEPALIVE": "1"})
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


@pytest.mark.skipif(importlib.util.find_spec("funboost_sqlite") is None, reason="funboost-sqlite not installed")
def test_a_process_forked_after_multi_process_consume_exits_cleanly(tmp_path):
    """After ``multi_process_consume`` a process may fork for its own reasons (its own multiprocessing):
    such a child ran the parent's at-exit wait for the consumer children, asked ``is_alive()`` of
    processes it did not start, which raises there, and exited with status 1 (found by the nats suite)."""
    script = tmp_path / "fork_after.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, uuid
        from funboost import BoosterParams, boost

        @boost(BoosterParams(queue_name="fork_after_" + uuid.uuid4().hex[:8], broker_kind="sqlite",
                             state_backend="memory", log_to_console=False))
        def f(x):
            pass

        procs = f.multi_process_consume(1)
        for p in procs:
            p.terminate()
            p.join(30)
        child = multiprocessing.get_context("fork").Process(target=print, args=("CHILD RAN",))
        child.start()
        child.join(30)
        print("FORKED", child.exitcode, flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k != "FUNBOOST_NO_KEEPALIVE"}
    env["FUNBOOST_SQLITE_DIR"] = str(tmp_path / "sqlite")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "CHILD RAN" in r.stdout, r.stdout + r.stderr
    assert "FORKED 0" in r.stdout, r.stdout + r.stderr
