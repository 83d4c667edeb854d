"""A consumer process that stalls for good at one point of taking a job, for the SIGKILL tests:
``python _stall_worker.py QUEUE URL MARKER_DIR POINT``.

POINT: ``blmove`` (right after the blocking take of an empty queue returned a job id; ``blocking.<pid>``
is written when the worker starts blocking), ``fetch`` (right
after rq's dequeue took a job id into the intermediate list, before rq reads the job) or ``prepare`` (rq
registered the job as started, before it removes the id from the intermediate list). On reaching it, it
writes ``stalled.<pid>`` into MARKER_DIR and waits forever (to be SIGKILLed there); the tasks themselves
write markers as in ``funboost.testing.workers.marker_worker`` (one worker thread)."""
import os
import sys
import threading
from typing import Any

import redis
from rq.queue import Queue

from funboost.testing.workers import marker_worker

queue, url, marker_dir, point = sys.argv[1:5]
_stall = threading.Event()


def stall() -> None:
    open(os.path.join(marker_dir, f"stalled.{os.getpid()}"), "w").close()
    _stall.wait()  # never set: the test SIGKILLs this process here


if point == "blmove":
    # the blocking take: rq's own BLMOVE (a plain call), or one sent in a pipeline with other commands
    from redis.client import Pipeline

    _blmove = redis.Redis.blmove
    _execute = Pipeline.execute

    def blmove(self: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, Pipeline):  # only queued here: see execute
            return _blmove(self, *args, **kwargs)
        open(os.path.join(marker_dir, f"blocking.{os.getpid()}"), "w").close()  # the test pushes now
        got = _blmove(self, *args, **kwargs)
        if got is not None:
            stall()
        return got

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        blocking = any(str(cmd[0]).upper() == "BLMOVE" for cmd, _ in self.command_stack)
        if blocking:
            open(os.path.join(marker_dir, f"blocking.{os.getpid()}"), "w").close()
        out = _execute(self, *args, **kwargs)
        if blocking and out and out[-1] is not None:
            stall()
        return out

    redis.Redis.blmove = blmove  # type: ignore[method-assign]
    Pipeline.execute = execute  # type: ignore[method-assign]
elif point == "fetch":
    _fetch = Queue._fetch_dequeued_job.__func__  # type: ignore[attr-defined]

    def fetch(cls: Any, *args: Any, **kwargs: Any) -> Any:
        stall()
        return _fetch(cls, *args, **kwargs)

    Queue._fetch_dequeued_job = classmethod(fetch)  # type: ignore[method-assign,assignment]
elif point == "prepare":
    from funboost_rq.worker import FunboostRqWorker

    def prepare(self: Any, *args: Any, **kwargs: Any) -> None:
        stall()

    FunboostRqWorker.prepare_job_execution = prepare  # type: ignore[method-assign]
else:
    raise SystemExit(f"unknown point {point!r}")

marker_worker("RQ", queue, {"redis_url": url}, marker_dir, 0, 1)
