"""In-process state backend: for tests and single-process programs (not shared across processes)."""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from funboost.records import expand_record, record_task_id, record_time_start
from funboost.state.base import StateBackend
from funboost.state.batched import record_filter
from funboost.timeseries import MetricRow


class MemoryStateBackend(StateBackend):
    name = "memory"
    shared_across_processes = False

    def __init__(self, url: Optional[str] = None) -> None:
        super().__init__(url)
        self._cond = threading.Condition()
        self._results: dict[str, tuple[float, dict]] = {}
        self._filters: dict[str, dict[str, Optional[float]]] = {}
        self._flags: dict[str, dict[str, Any]] = {}
        self._consumers: dict[str, tuple[float, dict]] = {}
        self._kills: dict[str, dict[str, float]] = {}
        self._statuses: dict[str, dict[str, tuple[float, dict]]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._docs: dict[str, dict[str, tuple[Optional[float], dict]]] = {}
        self._metrics: dict[tuple[str, int, str, str], tuple[float, dict]] = {}

    def set_result(self, task_id, status, ttl):
        with self._cond:
            self._results[task_id] = (time.time() + ttl, status)
            self._cond.notify_all()

    def get_result(self, task_id):
        with self._cond:
            item = self._results.get(task_id)
            if item is None:
                return None
            if item[0] < time.time():
                del self._results[task_id]
                return None
            return item[1]

    def wait_result(self, task_id, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                r = self.get_result(task_id)
                if r is not None:
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def filter_add(self, queue, key, ttl):
        with self._cond:
            self._filters.setdefault(queue, {})[key] = (time.time() + ttl) if ttl else None

    def filter_contains(self, queue, key):
        with self._cond:
            exp = self._filters.get(queue, {}).get(key, 0)
            if exp == 0:
                return False
            if exp is not None and exp < time.time():
                del self._filters[queue][key]
                return False
            return True

    def filter_clear(self, queue):
        with self._cond:
            self._filters.pop(queue, None)

    def set_flag(self, queue, name, value):
        with self._cond:
            self._flags.setdefault(queue, {})[name] = value

    def get_flags(self, queue):
        with self._cond:
            return dict(self._flags.get(queue, {}))

    def heartbeat(self, consumer_id, queue, info, ttl):
        with self._cond:
            self._consumers[consumer_id] = (time.time() + ttl, {**info, "consumer_id": consumer_id, "queue": queue,
                                                                 "last_seen": time.time()})

    def live_consumers(self, queue=None):
        now = time.time()
        with self._cond:
            return [i for exp, i in self._consumers.values() if exp >= now and (queue is None or i["queue"] == queue)]

    def remove_consumer(self, consumer_id):
        with self._cond:
            self._consumers.pop(consumer_id, None)

    def request_kill(self, queue, task_id, ttl=3600):
        with self._cond:
            self._kills.setdefault(queue, {})[task_id] = time.time() + ttl

    def kill_requests(self, queue):
        now = time.time()
        with self._cond:
            return {t for t, exp in self._kills.get(queue, {}).items() if exp >= now}

    def save_statuses(self, table, records, ttl):
        self._keep_statuses(table, [dict(r) for r in records], ttl)  # copies: records may be live dicts

    def save_status_batch(self, table, batch, ttl):
        self._keep_statuses(table, batch.records, ttl)  # compact records, expanded when queried

    def _keep_statuses(self, table: str, records: list, ttl: float) -> None:
        exp = time.time() + ttl
        with self._cond:
            t = self._statuses.setdefault(table, {})
            for r in records:
                t[record_task_id(r)] = (exp, r)

    def query_statuses(self, table, *, task_id=None, success=None, since=None, until=None, limit=100):
        now = time.time()
        with self._cond:
            t = self._statuses.get(table, {})
            if task_id is not None:
                hit = t.get(task_id)
                rows = [hit[1]] if hit is not None and hit[0] >= now else []
            else:
                rows = [r for exp, r in t.values() if exp >= now]
        keep = record_filter(success, since, until)
        rows = sorted((r for r in rows if keep(r)), key=record_time_start, reverse=True)
        return [expand_record(r) for r in rows[:limit]]

    # ---- documents
    def doc_put(self, collection, key, value, ttl=None):
        with self._cond:
            self._docs.setdefault(collection, {})[key] = ((time.time() + ttl) if ttl else None, dict(value))

    def doc_get(self, collection, key):
        with self._cond:
            item = self._docs.get(collection, {}).get(key)
        return dict(item[1]) if item is not None and (item[0] is None or item[0] >= time.time()) else None

    def doc_list(self, collection):
        now = time.time()
        with self._cond:
            items = sorted(self._docs.get(collection, {}).items())
        return {k: dict(v) for k, (exp, v) in items if exp is None or exp >= now}

    def doc_delete(self, collection, key):
        with self._cond:
            return self._docs.get(collection, {}).pop(key, None) is not None

    # ---- metrics
    def metrics_put(self, rows):
        now = time.time()
        with self._cond:
            for r in rows:
                self._metrics[(r.res, r.bucket, r.queue, r.source)] = (now + r.ttl, dict(r.data))
            for k in [k for k, (exp, _) in self._metrics.items() if exp < now]:
                del self._metrics[k]

    def metrics_get(self, res, since, queue=None):
        with self._cond:
            items = list(self._metrics.items())
        return [MetricRow(k[0], k[1], k[2], k[3], dict(v)) for k, (_, v) in items
                if k[0] == res and k[1] >= since and (queue is None or k[2] == queue)]

    # ---- locks: name -> (owner, expiry)
    def acquire_lock(self, name, owner, ttl):
        now = time.time()
        with self._cond:
            locks = self._locks
            held = locks.get(name)
            if held is not None and held[1] > now and held[0] != owner:
                return False
            locks[name] = (owner, now + ttl)
            return True

    def release_lock(self, name, owner):
        with self._cond:
            locks = self._locks
            held = locks.get(name)
            if held is None or held[0] != owner or held[1] <= time.time():
                return False
            del locks[name]
            return True
