"""The rq job functions of funboost queues.

rq stores a job's function as an import path and the worker imports it. Every funboost queue's jobs name
``funboost_rq.tasks.<queue name>`` (a module-level ``__getattr__`` makes one per queue, so rq's tools show
the queue as the function's name), or :func:`run` when the queue name is not a Python identifier. Both
hand the message to the funboost consumer of the queue the job was taken from (``job.origin``) in the
worker thread that runs it.

A plain rq producer may enqueue keyword arguments: ``Queue("q", connection=r).enqueue("funboost_rq.tasks.q",
x=1, y=2)`` runs the funboost function of queue ``q`` with them, under the rq job id.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from rq import get_current_job

from funboost.foreign import Verb, envelope_from_foreign

FALLBACK_PATH = "funboost_rq.job.run"
TASKS_MODULE = "funboost_rq.tasks"


class FunboostJobFailed(Exception):
    """Raised from the rq job when the funboost function failed for good (after funboost's retries), so
    that rq puts the job into its ``FailedJobRegistry`` with the error."""


class NotAFunboostWorker(RuntimeError):
    """A funboost job ran in a worker that funboost did not start (e.g. the ``rq worker`` command)."""


_local = threading.local()


def bind_worker(worker: Any) -> None:
    """Called by funboost's rq worker thread: jobs run in this thread belong to ``worker``."""
    _local.worker = worker


def current_worker() -> Optional[Any]:
    return getattr(_local, "worker", None)


def job_path(queue: str) -> str:
    """The import path rq stores for the jobs of ``queue``."""
    return f"{TASKS_MODULE}.{queue}" if queue.isidentifier() else FALLBACK_PATH


def run(*args: Any, **kwargs: Any) -> Any:
    """Run the current rq job's funboost message through the consumer of the job's queue."""
    worker = current_worker()
    job = get_current_job()
    if worker is None or job is None:
        raise NotAFunboostWorker("funboost jobs run on the workers that booster.consume() starts, "
                                 "not on a plain rq worker")
    outcome = worker.host.run_message(job.origin, envelope_from_foreign(args, kwargs, job.id, framework="rq"),
                                      eta=job.meta.get("funboost_eta"))
    if outcome.verb is Verb.ACK:
        return outcome.result
    if outcome.verb is Verb.IGNORE:  # funboost published the follow-up message itself
        return None
    if outcome.verb is Verb.REJECT:  # not run (the consumer stops): the worker puts the job back
        worker.give_back_current = True
        return None
    raise FunboostJobFailed(outcome.error)


def named(queue: str) -> Callable[..., Any]:
    """:func:`run` under the queue's name."""
    def task(*args: Any, **kwargs: Any) -> Any:
        return run(*args, **kwargs)

    task.__name__ = task.__qualname__ = queue
    task.__module__ = TASKS_MODULE
    return task
