"""Reading status records that a backend stores a batch at a time (sqlite, redis).

The engine hands records over in batches (:class:`~funboost.records.StatusBatch`); storing each
batch as one value (its JSON array) and its task ids as one text costs a small fraction of a value and
index entries per record. These helpers give such backends the same query behaviour as the backends that
keep one record per task id:

- a task run again (requeued, retried later) has several records; only its latest counts, and the filters
  apply to that one. Batches are read newest first; within a batch a later record wins, across batches the
  later start (on a tie, the newer batch);
- a lookup by task id reads only the batches whose ids text contains the id, and of those only the ones
  from the id's creation time on when it is a uuid7 (the engine's ids), minus :data:`CLOCK_SKEW`.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Optional

from funboost.records import StatusBatch, expand_record, record_success, record_task_id, record_time_start
from funboost.message import uuid7_time

CLOCK_SKEW = 3600.0  # a record's start may precede its id's creation time by this much (hosts' clocks)


class BatchStatusStore:
    """Mixin for a state backend that stores status records a batch at a time: records given as dicts
    (``save_statuses``) go the engine's way, in batches of 1,000, through its ``save_status_batch``."""

    def save_statuses(self, table: str, records: list[dict], ttl: float) -> None:
        for batch in StatusBatch.chunks(records):
            self.save_status_batch(table, batch, ttl)  # type: ignore[attr-defined]


def ids_text(task_ids: Iterable[str]) -> str:
    """A batch's task ids as one text that :func:`id_needle` finds by substring."""
    return "\n%s\n" % "\n".join(task_ids)


def id_needle(task_id: str) -> str:
    return f"\n{task_id}\n"


def oldest_batch_for(task_id: str) -> Optional[float]:
    """The smallest newest-start (``t_max``) a batch holding ``task_id`` can have; None if unknown."""
    born = uuid7_time(task_id)
    return None if born is None else born - CLOCK_SKEW


def record_filter(success: Optional[bool], since: Optional[float], until: Optional[float]) -> Callable[[Any], bool]:
    def keep(r: Any) -> bool:
        ts = record_time_start(r)
        return ((success is None or record_success(r) == bool(success))
                and (since is None or ts >= since) and (until is None or ts <= until))
    return keep


def latest_of_task(batches: Iterable[list], task_id: str, keep: Callable[[Any], bool]) -> list[dict]:
    """``[record]`` of ``task_id`` (expanded) if its latest record passes ``keep``, else ``[]``.
    ``batches``: parsed batches that may hold it, newest first."""
    latest = None
    for records in batches:
        mine = [r for r in records if record_task_id(r) == task_id]
        if mine and (latest is None or record_time_start(mine[-1]) > record_time_start(latest)):
            latest = mine[-1]
    return [expand_record(latest)] if latest is not None and keep(latest) else []


def newest_records(batches: Iterable[tuple[Optional[float], list]], keep: Callable[[Any], bool],
                   limit: int) -> list[dict]:
    """The newest ``limit`` records (expanded) that are their task's latest and pass ``keep``.
    ``batches``: (t_max, parsed records) ordered by t_max, newest first; read only as far as needed."""
    found: dict = {}  # task id -> its latest record among the batches read
    top: list = []  # newest ``limit`` records that are their task's latest and pass keep (for stopping)
    for t_max, records in batches:
        if len(top) >= limit and (t_max or 0.0) < record_time_start(top[-1]):
            break  # every record from here on is older than the ones already chosen
        new = []
        for tid, r in {record_task_id(r): r for r in records}.items():
            seen = found.get(tid)
            if seen is None or record_time_start(r) > record_time_start(seen):
                found[tid] = r
                if keep(r):
                    new.append(r)
        top = heapq.nlargest(limit, [r for r in top if found[record_task_id(r)] is r] + new, key=record_time_start)
    chosen = heapq.nlargest(limit, (r for r in found.values() if keep(r)), key=record_time_start)
    return [expand_record(r) for r in chosen]


def text_needle(text: str) -> str:
    """``text`` as it appears inside the stored JSON (escaped, without the quotes)."""
    from funboost.records import dumps_state
    return dumps_state(text)[1:-1]


def matches_search(rec: dict, success: Optional[bool], since: Optional[float], until: Optional[float],
                   text: Optional[str], before: Optional[tuple]) -> bool:
    """The filters of ``StateBackend.search_statuses`` on one expanded record."""
    ts = rec.get("time_start") or 0.0
    if success is not None and bool(rec.get("success")) != bool(success):
        return False
    if (since is not None and ts < since) or (until is not None and ts > until):
        return False
    if before is not None and (ts, rec.get("task_id") or "") >= (float(before[0]), str(before[1])):
        return False
    if text:
        from funboost.records import dumps_state
        if text_needle(text) not in dumps_state(rec):
            return False
    return True


def search_batches(batches: Iterable[tuple[Optional[float], Any]], *, success: Optional[bool] = None,
                   since: Optional[float] = None, until: Optional[float] = None, text: Optional[str] = None,
                   before: Optional[tuple] = None, limit: int = 50, needle: Optional[bytes] = None) -> list[dict]:
    """Every record (each run, not only a task's latest) of ``batches`` that passes the filters, newest
    first, at most ``limit``. ``batches``: (t_max, raw JSON) ordered by t_max, newest first, read only as
    far as needed; a batch whose raw bytes do not contain ``needle`` (bytes) is skipped unparsed."""
    from funboost.records import loads_state
    found: list = []
    for t_max, raw in batches:
        if len(found) >= limit and (t_max or 0.0) < (found[limit - 1].get("time_start") or 0.0):
            break
        if needle is not None:
            b = raw if isinstance(raw, (bytes, bytearray)) else str(raw).encode()
            if needle not in b:
                continue
        for r in loads_state(raw):
            if success is not None and record_success(r) != bool(success):
                continue
            rec = expand_record(r)
            if matches_search(rec, None, since, until, text, before):
                found.append(rec)
        found.sort(key=lambda r: (r.get("time_start") or 0.0, r.get("task_id") or ""), reverse=True)
        del found[limit:]
    return found
