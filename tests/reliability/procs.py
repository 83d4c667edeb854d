"""Consumer processes for fault tests: start one on any broker kind, SIGKILL it, read what it ran.

Each consumer appends one line per finished task (the task's ``i``) to its own file with a single
``os.write`` on an O_APPEND descriptor: the line is in the kernel before the engine acks the message, so a
SIGKILL can lose a line only for a task that was not acked either (and therefore runs again elsewhere).

Run as a script, this module *is* the consumer: ``python procs.py KIND QUEUE OPTIONS_JSON OUT_PATH``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Optional

READY = "consumer ready"


class ConsumerProcess:
    """One consumer of ``queue`` in a child process, recording its runs in ``out_path``."""

    def __init__(self, kind: str, queue: str, options: dict[str, Any], out_path: str,
                 concurrency: int = 16, task_seconds: float = 0.002) -> None:
        self.out_path = out_path
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), kind, queue, json.dumps(options), out_path,
             str(concurrency), str(task_seconds)],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if line != READY:
            self.proc.kill()
            raise RuntimeError(f"consumer for {queue} on {kind} did not start (said {line!r}, "
                               f"exit code {self.proc.wait(10)})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def runs(self) -> Counter:
        return read_runs(self.out_path)

    def sigkill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def read_runs(path: str) -> Counter:
    """How many times each task ran in one consumer (a line cut by a kill is ignored: not acked either)."""
    if not os.path.exists(path):
        return Counter()
    with open(path, "rb") as f:
        data = f.read()
    return Counter(int(line) for line in data.split(b"\n") if line.strip().isdigit())


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _consumer_main(kind: str, queue: str, options_json: str, out_path: str, concurrency: str,
                   task_seconds: str) -> None:
    from funboost import BoosterParams, boost

    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pause = float(task_seconds)

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=json.loads(options_json),
                         concurrent_num=int(concurrency), state_backend="memory", log_to_console=False,
                         max_retry_times=0))
    def task(i: int) -> None:
        time.sleep(pause)
        os.write(fd, b"%d\n" % i)

    task.consume()
    print(READY, flush=True)
    while True:
        time.sleep(1)


def publisher(kind: str, queue: str, options: dict[str, Any]) -> Any:
    """A booster on ``queue`` used only to publish ``task(i=...)`` messages from the test process."""
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=options,
                         state_backend="memory", log_to_console=False))
    def task(i: int) -> None:  # the consumers run the real body
        raise AssertionError("the publisher never consumes")

    return task


def stop_all(procs: list[Optional[ConsumerProcess]]) -> None:
    for p in procs:
        if p is not None:
            p.stop()


if __name__ == "__main__":
    _consumer_main(*sys.argv[1:7])
