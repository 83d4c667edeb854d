"""The state backend interface: everything besides the queue itself.

RPC results, dedup filters, consumer heartbeats, pause/qps/concurrency flags, remote-kill requests and
status records go through one small interface, so that no feature quietly needs Redis. ``memory`` and
``sqlite`` ship in core; ``redis`` ships in funboost-redis; each is found through the ``funboost.state``
entry-point group and chosen per booster (``BoosterParams.state_backend``) or globally
(env ``FUNBOOST_STATE_BACKEND``; default ``sqlite``).
"""
from __future__ import annotations

import os
import time
from typing import Any, ClassVar, Optional

from funboost.exceptions import StateBackendError
from funboost.plugins.distributions import distribution_for_state_backend
from funboost.plugins.manager import STATE_GROUP, entry_point_import_error, entry_points, find_entry_point
from funboost.process_local import ProcessLocalDict
# the state JSON codec lives with the record format (funboost.records); re-exported for backends
from funboost.records import StatusBatch, dumps_state, dumps_state_bytes, loads_state  # noqa: F401
from funboost.timeseries import MetricRow  # noqa: F401


class StateBackend:
    """Abstract base. Implementations must be safe for use from several threads (and, for the
    shared backends, several processes). Times are epoch seconds; ``ttl`` values are seconds."""

    name: ClassVar[str] = ""
    shared_across_processes: ClassVar[bool] = True

    def __init__(self, url: Optional[str] = None) -> None:
        self.url = url

    # ---- RPC results
    def set_result(self, task_id: str, status: dict, ttl: float) -> None:
        raise NotImplementedError

    def get_result(self, task_id: str) -> Optional[dict]:
        raise NotImplementedError

    def wait_result(self, task_id: str, timeout: float) -> Optional[dict]:
        """Block until the result exists or ``timeout`` passes (default: polling with back-off)."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            r = self.get_result(task_id)
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.05)

    # ---- dedup filters
    def filter_add(self, queue: str, key: str, ttl: Optional[float]) -> None:
        raise NotImplementedError

    def filter_contains(self, queue: str, key: str) -> bool:
        raise NotImplementedError

    def filter_clear(self, queue: str) -> None:
        raise NotImplementedError

    # ---- flags (pause, qps, concurrency) per queue
    def set_flag(self, queue: str, name: str, value: Any) -> None:
        raise NotImplementedError

    def get_flags(self, queue: str) -> dict:
        raise NotImplementedError

    # ---- consumer heartbeats / registry
    def heartbeat(self, consumer_id: str, queue: str, info: dict, ttl: float) -> None:
        raise NotImplementedError

    def live_consumers(self, queue: Optional[str] = None) -> list[dict]:
        raise NotImplementedError

    def remove_consumer(self, consumer_id: str) -> None:
        raise NotImplementedError

    # ---- remote kill
    def request_kill(self, queue: str, task_id: str, ttl: float = 3600) -> None:
        raise NotImplementedError

    def kill_requests(self, queue: str) -> set:
        raise NotImplementedError

    # ---- status records
    def save_statuses(self, table: str, records: list[dict], ttl: float) -> None:
        raise NotImplementedError

    def save_status_batch(self, table: str, batch: "StatusBatch", ttl: float) -> None:
        """Store the records of a :class:`~funboost.records.StatusBatch`: what the engine calls, with
        records serialised in the compact form the moment their runs were final. A backend stores what
        suits it (``batch.rows``, ``batch.json``, ``batch.records``, ``batch.task_ids``...) and reads it back
        with :func:`~funboost.records.expand_record`; this default expands every record and calls
        :meth:`save_statuses`."""
        self.save_statuses(table, batch.dicts(), ttl)

    def query_statuses(self, table: str, *, task_id: Optional[str] = None, success: Optional[bool] = None,
                       since: Optional[float] = None, until: Optional[float] = None,
                       limit: int = 100) -> list[dict]:
        raise NotImplementedError

    def search_statuses(self, table: str, *, success: Optional[bool] = None, since: Optional[float] = None,
                        until: Optional[float] = None, text: Optional[str] = None, task_id: Optional[str] = None,
                        before: Optional[tuple[float, str]] = None, limit: int = 50) -> list[dict]:
        """Status records of ``table``, newest first (every run's record, not only a task's latest), that
        pass the filters: ``text`` is a substring of the record's JSON (arguments, result, exception, host);
        ``before`` is the paging cursor, ``(time_start, task_id)`` of the last record of the previous page.
        The default reads :meth:`query_statuses`; the batch stores (sqlite, redis) answer it from their
        batches with a text pre-filter (:func:`funboost.state.batched.search_batches`)."""
        from funboost.state.batched import matches_search
        if task_id is not None:
            recs = self.query_statuses(table, task_id=task_id, limit=limit)
        else:
            recs = self.query_statuses(table, success=success, since=since, until=until,
                                       limit=max(limit * 20, 1000))
        out = [r for r in recs if matches_search(r, success, since, until, text, before)]
        out.sort(key=lambda r: (r.get("time_start") or 0.0, r.get("task_id") or ""), reverse=True)
        return out[:limit]

    # ---- small documents: the queue catalog, the audit log, the web manager's users (funboost.admin).
    # A collection maps keys to JSON objects; ``ttl`` None keeps a document until it is deleted.
    def doc_put(self, collection: str, key: str, value: dict, ttl: Optional[float] = None) -> None:
        raise NotImplementedError(f"state backend {self.name!r} does not store documents")

    def doc_get(self, collection: str, key: str) -> Optional[dict]:
        raise NotImplementedError(f"state backend {self.name!r} does not store documents")

    def doc_list(self, collection: str) -> dict[str, dict]:
        """Every live document of ``collection``, by key."""
        raise NotImplementedError(f"state backend {self.name!r} does not store documents")

    def doc_delete(self, collection: str, key: str) -> bool:
        raise NotImplementedError(f"state backend {self.name!r} does not store documents")

    # ---- time-series metrics (funboost.timeseries): one row per (resolution, bucket, queue, source),
    # written a few at a time by each consumer (``source`` = its consumer id) and replaced whole
    def metrics_put(self, rows: "list[MetricRow]") -> None:
        raise NotImplementedError(f"state backend {self.name!r} does not store metrics")

    def metrics_get(self, res: str, since: int, queue: Optional[str] = None) -> "list[MetricRow]":
        """Rows of resolution ``res`` with ``bucket >= since`` (of ``queue``, or of every queue)."""
        raise NotImplementedError(f"state backend {self.name!r} does not store metrics")

    # ---- distributed locks
    def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lock ``name`` for ``owner`` for ``ttl`` seconds; True if taken.

        Succeeds when the lock is free, expired, or already held by ``owner`` (then its expiry is
        pushed back to now + ``ttl``: holders renew by acquiring again). Never blocks. A lock that is
        never released expires after ``ttl``, so a once-only claim (e.g. one scheduled run time) is
        ``acquire_lock(claim_key, my_id, ttl)`` without a release."""
        raise NotImplementedError

    def release_lock(self, name: str, owner: str) -> bool:
        """Release ``name`` if ``owner`` holds it; True if it was released. Never releases another
        owner's lock (one that expired and was taken over)."""
        raise NotImplementedError

    def lock(self, name: str, owner: str, ttl: float, timeout: float = 0.0,
             poll: float = 0.05) -> "_LockContext":
        """``with backend.lock(name, owner, ttl, timeout=5):`` waits up to ``timeout`` seconds for the
        lock (raises TimeoutError), releases it on exit."""
        return _LockContext(self, name, owner, ttl, timeout, poll)

    @classmethod
    def check_available(cls, url: Optional[str] = None) -> Optional[str]:
        """None if the backend's server is reachable, else the reason (used by tests to skip)."""
        return None

    def close(self) -> None:
        pass


class _LockContext:
    def __init__(self, backend: StateBackend, name: str, owner: str, ttl: float, timeout: float,
                 poll: float) -> None:
        self.backend, self.name, self.owner, self.ttl, self.timeout, self.poll = (
            backend, name, owner, ttl, timeout, poll)

    def __enter__(self) -> "_LockContext":
        deadline = time.monotonic() + self.timeout
        while not self.backend.acquire_lock(self.name, self.owner, self.ttl):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"lock {self.name!r} not acquired within {self.timeout}s")
            time.sleep(self.poll)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.backend.release_lock(self.name, self.owner)


# ---------------------------------------------------------------- discovery
_instances: ProcessLocalDict[tuple[str, str], StateBackend] = ProcessLocalDict()


def installed_state_backends() -> list[str]:
    return sorted({ep.name for ep in entry_points(STATE_GROUP)})


def resolve_state_backend_class(name: str) -> type[StateBackend]:
    """The class of state backend ``name``, found with the same entry-point reader as broker kinds."""
    ep = find_entry_point(STATE_GROUP, name)
    if ep is None:
        dist = distribution_for_state_backend(name)
        hint = f" (it is provided by {dist!r}: pip install {dist})" if dist else ""
        raise StateBackendError(f"unknown state backend {name!r}{hint}; installed: {installed_state_backends()}")
    try:
        cls = ep.load()
    except Exception as exc:
        raise StateBackendError(entry_point_import_error(ep, "state backend", exc)) from exc
    if not (isinstance(cls, type) and issubclass(cls, StateBackend)):
        raise StateBackendError(f"state backend entry point {ep.name!r} = {ep.value!r} is not a StateBackend class")
    return cls


def default_state_backend_name() -> str:
    return os.environ.get("FUNBOOST_STATE_BACKEND", "sqlite")


def get_state_backend(name: Optional[str] = None, url: Optional[str] = None) -> StateBackend:
    """One instance per (process, name, url); rebuilt after fork."""
    from funboost.funboost_config_deafult import use_config_form_funboost_config_module
    use_config_form_funboost_config_module()  # its settings may name this backend's URL
    name = (name or default_state_backend_name()).lower()
    url = url or os.environ.get(f"FUNBOOST_STATE_{name.upper()}_URL") or ""
    return _instances.get_or_create((name, url), lambda: resolve_state_backend_class(name)(url or None))
