"""Test helpers: free ports, consumer subprocesses (a real ``@boost`` consumer on the http kind, so it can
be SIGKILLed), raw HTTP requests and waiting on conditions."""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Optional

from funboost.testing import wait_until  # noqa: F401  (re-exported for the tests)

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConsumerProcess:
    """A consumer of ``queue`` in a subprocess (consumer_proc.py): ``work(x, sleep, fail)``."""

    def __init__(self, queue: str, port: int, extra: Optional[dict] = None, lifetime: float = 120.0) -> None:
        env = dict(os.environ, CONSUMER_LIFETIME=str(lifetime), FUNBOOST_LOG_TO_CONSOLE="0")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "consumer_proc.py"), queue, str(port), json.dumps(extra or {})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60.0)
        line = self.proc.stdout.readline() if ready else ""  # READY, or "" if it died / hung
        if not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"consumer process did not start: {line!r} {err}")
        self.address = line.split()[1]
        self.pid = int(line.split()[2])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def raw_request(url: str, method: str = "GET", body: Optional[bytes] = None,
                headers: Optional[dict] = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request with the standard library (no funboost code): ``(status, parsed JSON body)``."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        data = err.read()
        return err.code, json.loads(data) if data else None
