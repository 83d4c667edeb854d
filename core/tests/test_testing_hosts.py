"""funboost.testing.hosts: the "other host" of the cross-host recovery tests is really another host as
liveness sees it (hostname and pid namespace differ), and killing it kills every process it started."""
from __future__ import annotations

import os
import subprocess
import sys

from funboost.engine.liveness import HOST_KEY, pid_gone
from funboost.testing import require_service, wait_until
from funboost.testing.hosts import kill_host, other_host_unavailable, start_on_other_host

# prints its HOST_KEY and pid, starts a grandchild that sleeps, prints nothing more
_SCRIPT = """
import os, subprocess, sys, time
from funboost.engine.liveness import HOST_KEY
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(HOST_KEY, os.getpid(), flush=True)
time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def test_a_process_on_the_other_host_has_its_own_host_key_and_dies_with_its_host():
    reason = other_host_unavailable()
    if reason:
        require_service(reason)
    proc = start_on_other_host([sys.executable, "-c", _SCRIPT], "fb-test-host", stdout=subprocess.PIPE, text=True)
    try:
        host_key, inner_pid = proc.stdout.readline().split()
        assert host_key.startswith("fb-test-host/") and host_key != HOST_KEY
        assert inner_pid == "1"  # the init of a new pid namespace: its pids mean nothing on this host
        init = wait_until(lambda: _children(proc.pid), 10, message="the namespace's init process")[0]
        grandchild = wait_until(lambda: _children(init), 10, message="the process it started")[0]
        assert not pid_gone(init) and not pid_gone(grandchild)
    finally:
        kill_host(proc)
    wait_until(lambda: pid_gone(init) and pid_gone(grandchild), 10,
               message="every process of the killed host is gone")
