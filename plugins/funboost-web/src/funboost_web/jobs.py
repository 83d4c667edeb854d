"""Scheduled jobs (APScheduler job stores of funboost.timing_job): list, pause, resume, remove.

The shared stores are read: ``sqlite`` (needs SQLAlchemy), ``redis`` (needs funboost-redis) and, when its URL
is configured (``FUNBOOST_APS_SQLALCHEMY_URL`` or ``FUNBOOST_STATE_SQLALCHEMY_URL``, as for the schedulers),
``sqlalchemy``; one table / key per queue of the catalog. ``memory`` stores live inside a scheduler process
and cannot be seen from here. APScheduler keeps a job's state pickled in its store; the stores of
``make_job_store`` read it through :mod:`funboost.job_state` (triggers, dates, time zones and plain values
only: a forged state is refused, never run), and the job's function reference (``push_fun_params_to_broker``
for every funboost job) is imported as the schedulers import it. Schedulers re-read their store every
``poll_interval`` seconds, so a change made here is picked up by them within that time.
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Optional

from funboost.admin import QueueAdmin

STORE_KINDS = ("sqlite", "redis", "sqlalchemy")
JOB_ACTIONS = ("pause", "resume", "remove")
_NEEDS = {  # what a store kind needs installed, and how to install it
    "sqlite": (("sqlalchemy",), "SQLAlchemy: pip install 'funboost-core[sqlalchemy]'"),
    "sqlalchemy": (("sqlalchemy",), "SQLAlchemy: pip install 'funboost-core[sqlalchemy]'"),
    "redis": (("redis", "apscheduler.jobstores.redis"), "funboost-redis: pip install funboost-redis"),
}


class StoreUnavailable(Exception):
    """A job store that cannot be read here: its client library is not installed, or its server is down."""


def missing_requirement(kind: str) -> Optional[str]:
    """Why the ``kind`` store cannot be read in this installation (None: it can)."""
    modules, what = _NEEDS.get(kind, ((), ""))
    for mod in modules:
        try:
            __import__(mod)
        except ImportError:
            return f"the {kind} job store needs {what}"
    return None


def configured_kinds() -> tuple[str, ...]:
    """The stores worth reading here: sqlalchemy only once a URL says which database holds it."""
    if os.environ.get("FUNBOOST_APS_SQLALCHEMY_URL") or os.environ.get("FUNBOOST_STATE_SQLALCHEMY_URL"):
        return STORE_KINDS
    return tuple(k for k in STORE_KINDS if k != "sqlalchemy")


def store_kinds() -> tuple[str, ...]:
    """The configured stores that this installation can read."""
    return tuple(k for k in configured_kinds() if missing_requirement(k) is None)


def unavailable_kinds() -> dict[str, str]:
    """Configured stores that cannot be read for lack of a library: kind -> what to install."""
    return {k: why for k in configured_kinds() if (why := missing_requirement(k)) is not None}


def _store(kind: str, queue: str) -> Any:
    from funboost.timing_job import make_job_store
    store, _ = make_job_store(kind, queue)

    class _Sched:  # what a store needs of its scheduler to rebuild jobs: their timezone
        timezone = _dt.timezone.utc

    store.start(_Sched(), "default")
    return store


def _job_dict(job: Any) -> dict:
    args = list(job.args or ())
    return {"id": job.id, "name": job.name, "trigger": str(job.trigger),
            "next_run_time": job.next_run_time.timestamp() if job.next_run_time else None,
            "paused": job.next_run_time is None, "args": args[1:], "kwargs": dict(job.kwargs or {})}


def list_jobs(admin: QueueAdmin) -> list[dict]:
    """One entry per (store kind, queue) that could be read: its jobs, or the reason it could not."""
    out: list[dict] = []
    for queue in admin.queue_names():
        for kind in store_kinds():
            try:
                store = _store(kind, queue)
                jobs = [_job_dict(j) for j in store.get_all_jobs()]
            except Exception as exc:  # the store's client is not installed, or its server is down
                out.append({"kind": kind, "queue": queue, "jobs": [], "error": f"{type(exc).__name__}: {exc}"})
                continue
            if jobs:
                out.append({"kind": kind, "queue": queue, "jobs": jobs, "error": None})
    return out


def job_action(admin: QueueAdmin, kind: str, queue: str, job_id: str, action: str) -> None:
    """``action`` on a job: ValueError for a bad action or store kind (checked before any store is read),
    StoreUnavailable when the store cannot be read here, LookupError when it has no such job."""
    if action not in JOB_ACTIONS:
        raise ValueError(f"action must be pause, resume or remove, got {action!r}")
    if kind not in configured_kinds():
        raise ValueError(f"store kind must be one of {configured_kinds()}, got {kind!r}")
    why = missing_requirement(kind)
    if why is not None:
        raise StoreUnavailable(why)
    try:
        store = _store(kind, queue)
        job = store.lookup_job(job_id)
    except ImportError as exc:
        raise StoreUnavailable(str(exc)) from None
    except Exception as exc:  # the store's server cannot be reached (redis, a database)
        raise StoreUnavailable(f"cannot read the {kind} job store of {queue!r}: {type(exc).__name__}: {exc}") from None
    if job is None:
        raise LookupError(f"no job {job_id!r} in the {kind} store of {queue!r}")
    if action == "remove":
        store.remove_job(job_id)
        return
    if action == "pause":
        job._modify(next_run_time=None)
    else:
        now = _dt.datetime.now(_dt.timezone.utc)
        job._modify(next_run_time=job.trigger.get_next_fire_time(None, now))
    store.update_job(job)
