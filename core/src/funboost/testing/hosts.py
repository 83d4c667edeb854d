"""A consumer on *another host*, for tests of lease-expiry recovery.

On one machine, funboost's liveness sees a dead consumer of the same host at once (its pid is gone:
:data:`funboost.engine.liveness.HOST_KEY` names the hostname and the pid namespace). A consumer on another
host can only be judged by its lease: dead once the lease is older than ``heartbeat_timeout``. To test
that path for real, :func:`start_on_other_host` runs a command in new UTS and pid namespaces (``unshare``,
in a user namespace so that no privilege is needed where the kernel allows unprivileged user namespaces):
another hostname, pids that mean nothing here, the same network (the test servers stay on loopback).
:func:`kill_host` SIGKILLs that "host": its init process, and with it every process of its pid namespace.

:func:`lost_host_recovery` is the whole scenario for any broker kind: a consumer on another host takes
tasks, the host dies mid-task, a consumer on this host must run every one of them.

The consumer processes are ``python -m funboost.testing.hosts worker ...`` (see :func:`worker_argv`): one
booster of the given kind and configuration whose task writes marker files (``started.<x>.<pid>``, then
after HOLD seconds ``done.<x>``) and, at start, ``host.<pid>`` with its :data:`HOST_KEY`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

_UNSHARE = ["unshare", "--user", "--map-root-user", "--uts", "--pid", "--fork", "--mount-proc",
            "--kill-child=SIGKILL"]
_checked: dict[str, Optional[str]] = {}


def other_host_unavailable() -> Optional[str]:
    """Why :func:`start_on_other_host` cannot work here (None: it can)."""
    if "reason" not in _checked:
        reason: Optional[str] = None
        if sys.platform != "linux" or shutil.which("unshare") is None:
            reason = "needs Linux and unshare(1) (util-linux) for a second host's namespaces"
        else:
            try:
                probe = subprocess.run(_UNSHARE + [sys.executable, "-c", "import socket; socket.sethostname('x')"],
                                       capture_output=True, timeout=20)
                if probe.returncode != 0:
                    reason = ("unshare cannot create user/uts/pid namespaces here: "
                              + probe.stderr.decode(errors="replace").strip()[-200:])
            except (OSError, subprocess.SubprocessError) as exc:
                reason = f"unshare failed: {exc}"
        _checked["reason"] = reason
    return _checked["reason"]


def start_on_other_host(argv: Sequence[str], hostname: str, **popen_kwargs: Any) -> subprocess.Popen:
    """Run ``argv`` (a python command, e.g. :func:`worker_argv`) as the init process of a new pid
    namespace with hostname ``hostname``. The returned process is ``unshare``; see :func:`kill_host`."""
    argv = list(argv)
    return subprocess.Popen(_UNSHARE + [sys.executable, "-m", __name__, "as-host", hostname, "--"] + argv,
                            **popen_kwargs)


def kill_host(proc: subprocess.Popen, timeout: float = 10) -> None:
    """The host dies: SIGKILL to ``unshare``, whose ``--kill-child`` SIGKILLs the namespace's init, and the
    kernel then every other process of the namespace. Waits for ``unshare`` to end."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout)


def worker_argv(kind: str, queue: str, marker_dir: os.PathLike | str, hold: float, concurrency: int,
                config: dict[str, Any]) -> list[str]:
    """The command of a marker-writing consumer (see the module docstring)."""
    return [sys.executable, "-m", __name__, "worker", kind, queue, str(marker_dir), str(hold), str(concurrency),
            json.dumps(config)]


def _markers(marker_dir: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in marker_dir.iterdir() if p.name.startswith(prefix))


def lost_host_recovery(kind: str, queue: str, config: dict[str, Any], marker_dir: os.PathLike | str, *,
                       tasks: int = 3, timeout: float = 60.0) -> dict[str, Any]:
    """The scenario, with assertions: ``tasks`` tasks published; a consumer on another host (concurrency
    ``tasks``) starts all of them and holds them; the host is SIGKILLed; a consumer on this host then runs
    every one (the other host's leases must expire: no pid of it can be checked from here).

    ``config`` is the kind's ``broker_exclusive_config`` (a short ``heartbeat_timeout`` keeps the test
    short). Returns what happened: the two hosts' keys, pids and the seconds from the kill to the last
    task done (a figure to print, not to assert on)."""
    from funboost import BoosterParams, boost
    from funboost.engine.liveness import HOST_KEY
    from funboost.testing.contract.base import require_service, wait_until

    reason = other_host_unavailable()
    if reason:
        require_service(reason)
    marker_dir = Path(marker_dir)
    booster = boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=config,
                                  state_backend="memory", log_to_console=False))(_noop)
    booster.push_many([(x,) for x in range(tasks)])
    out = subprocess.DEVNULL
    remote = start_on_other_host(worker_argv(kind, queue, marker_dir, 120.0, tasks, config), "funboost-other-host",
                                 stdout=out, stderr=out)
    local: Optional[subprocess.Popen] = None
    try:
        wait_until(lambda: len(_markers(marker_dir, "started.")) >= tasks, timeout,
                   message=f"the consumer on the other host started all {tasks} tasks")
        remote_started = _markers(marker_dir, "started.")
        host_files = _markers(marker_dir, "host.")
        remote_host = (marker_dir / host_files[0]).read_text() if host_files else ""
        assert remote_host and remote_host != HOST_KEY, (remote_host, HOST_KEY)
        kill_host(remote)
        killed_at = time.monotonic()
        assert not _markers(marker_dir, "done."), "the other host finished a task before it was killed"
        local = subprocess.Popen(worker_argv(kind, queue, marker_dir, 0.0, 2, config), stdout=out, stderr=out)
        wait_until(lambda: len(_markers(marker_dir, "done.")) >= tasks, timeout, interval=0.05,
                   message=f"a consumer on this host ran the {tasks} tasks the dead host held")
        recovered_after = time.monotonic() - killed_at
        again = [m for m in _markers(marker_dir, "started.") if m.endswith(f".{local.pid}")]
        assert len(again) == tasks, (again, remote_started)
        return {"remote_host": remote_host, "local_host": HOST_KEY, "remote_started": remote_started,
                "recovered_after": recovered_after}
    finally:
        kill_host(remote)
        if local is not None:
            if local.poll() is None:
                local.kill()
            local.wait(10)
        booster.stop_consume(5)


def _noop(x: int) -> int:
    return x


# ===================================================================================== the processes
def _as_host(hostname: str, argv: list[str]) -> None:
    socket.sethostname(hostname)
    os.execvp(argv[0], argv)


def _worker(kind: str, queue: str, marker_dir: str, hold: float, concurrency: int, config: dict) -> None:
    os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
    from funboost import BoosterParams, boost
    from funboost.engine.liveness import HOST_KEY

    pid = os.getpid()
    Path(marker_dir, f"host.{pid}").write_text(HOST_KEY)

    def work(x: int) -> int:
        Path(marker_dir, f"started.{x}.{pid}").touch()
        if hold:
            time.sleep(hold)  # a long task: the host is killed meanwhile
        Path(marker_dir, f"done.{x}").touch()
        return x

    work.__name__ = work.__qualname__ = "work"
    booster = boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=config,
                                  concurrent_num=concurrency, state_backend="memory", log_to_console=False,
                                  max_retry_times=0))(work)
    booster.consume()
    while True:
        time.sleep(1)


def main(args: list[str]) -> None:
    if args[:1] == ["as-host"] and len(args) >= 4 and args[2] == "--":
        _as_host(args[1], args[3:])
    elif args[:1] == ["worker"] and len(args) == 7:
        _worker(args[1], args[2], args[3], float(args[4]), int(args[5]), json.loads(args[6]))
    else:
        sys.exit("usage: python -m funboost.testing.hosts as-host HOSTNAME -- ARGV... | "
                 "worker KIND QUEUE MARKER_DIR HOLD CONCURRENCY CONFIG_JSON")


if __name__ == "__main__":
    main(sys.argv[1:])
