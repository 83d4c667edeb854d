"""Consumer processes for crash and fault tests, on any broker kind: start one, SIGKILL it, read what it ran.

Two recorders, both written before the engine acks the message, so a SIGKILL can lose a record only for a
task that was not acked either (and therefore runs again elsewhere):

* ``ConsumerProcess``: the task ``task(i: int)`` appends the line ``i`` to the process's own file with a
  single ``os.write`` on an O_APPEND descriptor (``read_runs`` counts them). For runs of thousands of tasks.
* ``marker_worker``: the task ``work(x: int)`` creates ``started.<x>.<pid>`` in a directory, holds, then
  creates ``done.<x>``. For tests that kill a worker in the middle of a given task (the framework plugins'
  crash tests run it through their ``_crash_worker.py``).

Run as a script, this module is the ``ConsumerProcess`` child:
``python -m funboost.testing.workers KIND QUEUE OPTIONS_JSON OUT_PATH CONCURRENCY TASK_SECONDS``.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any, NoReturn, Optional, Sequence

__all__ = ["ConsumerProcess", "read_runs", "recording_publisher", "stop_all", "marker_worker", "READY",
           "assert_victim_lost_nothing", "assert_clear_drops_what_a_dead_consumer_held"]

READY = "consumer ready"


class ConsumerProcess:
    """One consumer of ``queue`` in a child process, recording the ``i`` of each finished task in ``out_path``.

    ``netns``: run the child inside that network namespace (``ip netns exec``; root only)."""

    def __init__(self, kind: str, queue: str, options: dict[str, Any], out_path: str,
                 concurrency: int = 16, task_seconds: float = 0.002, netns: Optional[str] = None,
                 env: Optional[dict[str, str]] = None, record: str = "i",
                 state_backend: Optional[str] = "memory") -> None:
        """``record``: which argument identifies a task, ``i`` for ``task(i)``; a dotted path (``values.id``
        for a CDC row) makes the function ``task(**fields)`` and records that field. ``state_backend``:
        None for the configured default (kinds that keep a checkpoint there, such as CDC, need a durable one)."""
        self.out_path = out_path
        cmd = [sys.executable, "-m", "funboost.testing.workers", kind, queue, json.dumps(options), out_path,
               str(concurrency), str(task_seconds), record, state_backend or ""]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
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

    def done(self) -> int:
        return sum(self.runs().values())

    def dump_threads(self) -> None:
        """Print every thread's stack of the child to its stderr (the test's captured output)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)  # the dump is written asynchronously by the child; nothing waits on it

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


def assert_victim_lost_nothing(victim_runs: Counter, survivor_runs: Counter, n: int) -> Counter:
    """The at-least-once property after one of two consumers was killed (or frozen) mid-run: every task
    ``0..n-1`` ran; a task ran twice only if the victim ran it (it stopped before its ack was committed:
    its running tasks and the finished ones still in the engine's ack batcher, however many the ack latency
    under load left), and never twice in the survivor. Returns the runs of both."""
    runs = victim_runs + survivor_runs
    assert set(runs) == set(range(n)), f"lost: {sorted(set(range(n)) - set(runs))[:10]}"
    twice = [i for i, c in runs.items() if c > 1]
    assert all(victim_runs[i] for i in twice), "a duplicate the victim never ran"
    assert all(c == 1 for c in survivor_runs.values()), "the survivor ran a task twice"
    assert len(twice) < n // 4, f"{len(twice)} tasks ran twice"
    assert survivor_runs, "the survivor ran nothing"
    return runs


def assert_clear_drops_what_a_dead_consumer_held(kind: str, queue: str, options: dict[str, Any], out_path: str,
                                                 timeout: float = 30.0) -> None:
    """``clear()`` after a consumer was SIGKILLed mid-run leaves nothing to run, once the consumer is known to
    be dead (heartbeat expired, or its process / session gone): what it held would otherwise come back at the
    next reclaim pass and run after the clear. ``options`` (the kind's liveness settings) are the
    publisher's too: its purge judges liveness by them. Clears again until ``timeout`` (death is noticed
    after the kind's grace), then asserts the queue is empty."""
    from funboost.testing import wait_until

    work = recording_publisher(kind, queue, options)
    victim = None
    try:
        work.push_many(range(500))
        victim = ConsumerProcess(kind, queue, options, out_path, concurrency=8, task_seconds=0.2)
        wait_until(lambda: victim.done() >= 8, timeout, message="the victim ran some tasks")
        victim.sigkill()
        held = work.queue_size().in_flight
        assert held, f"the victim died holding nothing ({work.queue_size()}): the check proves nothing"

        def cleared() -> bool:
            work.clear()
            size = work.queue_size()
            return (size.ready, size.in_flight or 0, size.delayed) == (0, 0, 0)

        wait_until(cleared, timeout, interval=0.2,
                   message=f"clear() left the {held} in-flight message(s) of a SIGKILLed consumer: "
                           f"{work.queue_size()}")
    finally:
        stop_all([victim])
        work.broker.close()


def stop_all(procs: Sequence[Optional[ConsumerProcess]]) -> None:
    for p in procs:
        if p is not None:
            p.stop()


def recording_publisher(kind: str, queue: str, options: dict[str, Any]) -> Any:
    """A booster on ``queue`` for publishing ``task(i=...)`` from the test process (it never consumes)."""
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=options,
                         state_backend="memory", log_to_console=False))
    def task(i: int) -> None:  # the consumer processes run the real body
        raise AssertionError("the publisher never consumes")

    return task


def _consumer_main(kind: str, queue: str, options_json: str, out_path: str, concurrency: str,
                   task_seconds: str, record: str = "i", state_backend: str = "memory") -> NoReturn:
    from funboost import BoosterParams, boost

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # dump_threads(): where a stuck consumer waits
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pause = float(task_seconds)
    params = BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=json.loads(options_json),
                           concurrent_num=int(concurrency), log_to_console=False, max_retry_times=0,
                           **({"state_backend": state_backend} if state_backend else {}))
    if record == "i":
        @boost(params)
        def task(i: int) -> None:
            time.sleep(pause)
            os.write(fd, b"%d\n" % i)
    else:
        path = record.split(".")

        @boost(params)
        def task(**fields: Any) -> None:
            value: Any = fields
            for part in path:
                value = value[part]
            time.sleep(pause)
            os.write(fd, b"%d\n" % int(value))

    task.consume()
    print(READY, flush=True)
    while True:
        time.sleep(1)


def marker_worker(kind: str, queue: str, config: dict[str, Any], marker_dir: str, hold: float,
                  concurrency: int = 2) -> NoReturn:
    """Consume ``queue`` forever with ``work(x)`` writing marker files (see the module docstring); prints
    ``consuming`` once the consumer runs (threads in this process; the function is not importable by name,
    so not for ``multi_process_consume``)."""
    os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=config,
                         concurrent_num=concurrency, state_backend="memory", log_to_console=False,
                         max_retry_times=0))
    def work(x: int) -> int:
        open(os.path.join(marker_dir, f"started.{x}.{os.getpid()}"), "w").close()
        if hold:
            time.sleep(hold)
        open(os.path.join(marker_dir, f"done.{x}"), "w").close()
        return x

    work.consume()
    print("consuming", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    _consumer_main(*sys.argv[1:9])
