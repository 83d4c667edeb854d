"""Forged APScheduler job states for the tests of :mod:`funboost.job_state`: a state whose unpickling would
create a file (so a test sees whether it ran), and a way to plant such a state in a shared job store next to
the jobs an ``ApsJobAdder`` stored, as someone with write access to that store could."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

__all__ = ["CreatesFileWhenUnpickled", "forged_state", "plant_state"]


class CreatesFileWhenUnpickled:
    """Unpickling this calls ``open(path, "w")``: harmless, and visible afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def forged_state(marker: Path) -> bytes:
    """A job state shaped like APScheduler's (a dict) whose loading would create ``marker``."""
    return pickle.dumps({"version": 1, "id": "forged", "func": "funboost.timing_job:push_fun_params_to_broker",
                         "trigger": CreatesFileWhenUnpickled(marker), "args": (), "kwargs": {}},
                        pickle.HIGHEST_PROTOCOL)


def plant_state(kind: str, queue_name: str, job_id: str, state: bytes, next_run_time: float) -> None:
    """Store ``state`` under ``job_id`` in the ``kind`` job store of ``queue_name`` (sqlite, sqlalchemy or
    redis), where funboost's ``make_job_store`` keeps that queue's jobs, bypassing APScheduler."""
    from funboost import timing_job
    kind = kind.lower()
    if kind == "redis":
        import redis
        client = redis.Redis.from_url(timing_job._redis_url())
        try:
            client.hset(f"funboost:aps:{queue_name}:jobs", job_id, state)
            client.zadd(f"funboost:aps:{queue_name}:run_times", {job_id: next_run_time})
        finally:
            client.close()
        return
    store, _ = timing_job.make_job_store(kind, queue_name)  # APScheduler's table of that queue
    table = store.jobs_t
    try:
        table.metadata.create_all(store.engine, tables=[table])
        with store.engine.begin() as conn:
            conn.execute(table.insert().values(id=job_id, next_run_time=next_run_time, job_state=state))
    finally:
        store.engine.dispose()
