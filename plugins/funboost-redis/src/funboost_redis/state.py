"""RedisStateBackend: RPC results, dedup filters, flags, consumer heartbeats, remote-kill requests and
status records in Redis, shared by every process and host that reaches the server.

Chosen with ``BoosterParams(state_backend="redis")`` or env ``FUNBOOST_STATE_BACKEND=redis``; the URL comes
from ``FUNBOOST_STATE_REDIS_URL`` (passed by core), else ``FUNBOOST_REDIS_URL``, else
``redis://127.0.0.1:6379/0``. Keys live under ``funboost:state:``; per-queue keys are hash-tagged.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Any, Iterable, Iterator, Optional

from funboost.message import uuid7
from funboost.state.base import StateBackend, dumps_state, loads_state
from funboost.state.batched import BatchStatusStore, id_needle, ids_text, latest_of_task, newest_records, oldest_batch_for, record_filter
from funboost.state.batched import search_batches, text_needle
from funboost.timeseries import RESOLUTIONS, MetricRow, bucket_of

from funboost_redis.connection import DEFAULT_URL, ENV_URL, RedisOptions, conn_spec, get_handle
from funboost_redis.connection import check_available as _check_available

P = "funboost:state:"
_FOREVER = "+inf"

# take (or renew) when free or already ours; atomic on the server
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# delete only if still ours: an expired lock taken over by another owner must stay
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""



_dumps = dumps_state  # orjson when available: records are serialized on the consumer's time


class RedisStateBackend(BatchStatusStore, StateBackend):
    name = "redis"
    shared_across_processes = True

    def __init__(self, url: Optional[str] = None) -> None:
        super().__init__(url or os.environ.get(ENV_URL) or DEFAULT_URL)
        self._spec = conn_spec(RedisOptions(url=self.url))

    @property
    def _r(self) -> Any:
        # the handle cache is per process (cleared after fork), so this is fork-safe
        return get_handle(self._spec).client

    # ---- RPC results: a key per task plus a list used only to wake a waiter without polling
    def set_result(self, task_id: str, status: dict, ttl: float) -> None:
        ms = max(1, int(ttl * 1000))
        p = self._r.pipeline(transaction=False)
        p.set(P + "result:" + task_id, _dumps(status), px=ms)
        p.rpush(P + "result_wake:" + task_id, 1)
        p.pexpire(P + "result_wake:" + task_id, min(ms, 60000))
        p.execute()

    def get_result(self, task_id: str) -> Optional[dict]:
        v = self._r.get(P + "result:" + task_id)
        return loads_state(v) if v is not None else None

    def wait_result(self, task_id: str, timeout: float) -> Optional[dict]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get_result(task_id)
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # wakes when set_result pushes; bounded so that a missed wake-up costs at most 0.5 s
            self._r.blpop([P + "result_wake:" + task_id], timeout=max(0.01, min(left, 0.5)))

    # ---- dedup filters: a sorted set per queue, score = expiry (inf = forever)
    def _fkey(self, queue: str) -> str:
        return f"{P}filter:{{{queue}}}"

    def filter_add(self, queue: str, key: str, ttl: Optional[float]) -> None:
        now = time.time()
        p = self._r.pipeline(transaction=False)
        p.zadd(self._fkey(queue), {key: (now + ttl) if ttl else float("inf")})
        p.zremrangebyscore(self._fkey(queue), "-inf", now)  # keep the set from growing with dead keys
        p.execute()

    def filter_contains(self, queue: str, key: str) -> bool:
        s = self._r.zscore(self._fkey(queue), key)
        return s is not None and s >= time.time()

    def filter_clear(self, queue: str) -> None:
        self._r.delete(self._fkey(queue))

    # ---- flags
    def set_flag(self, queue: str, name: str, value: Any) -> None:
        self._r.hset(f"{P}flags:{{{queue}}}", name, _dumps(value))

    def get_flags(self, queue: str) -> dict:
        raw = self._r.hgetall(f"{P}flags:{{{queue}}}")
        return {k.decode(): loads_state(v) for k, v in raw.items()}

    # ---- consumers: info key with TTL + sorted sets (score = expiry) for listing
    def heartbeat(self, consumer_id: str, queue: str, info: dict, ttl: float) -> None:
        now = time.time()
        rec = {**info, "consumer_id": consumer_id, "queue": queue, "last_seen": now}
        p = self._r.pipeline(transaction=False)
        p.set(P + "consumer:" + consumer_id, _dumps(rec), px=max(1, int(ttl * 1000)))
        p.zadd(P + "consumers", {consumer_id: now + ttl})
        p.zremrangebyscore(P + "consumers", "-inf", now - 3600)
        p.execute()

    def live_consumers(self, queue: Optional[str] = None) -> list[dict]:
        ids = self._r.zrangebyscore(P + "consumers", time.time(), _FOREVER)
        if not ids:
            return []
        out = []
        for v in self._r.mget([P + "consumer:" + i.decode() for i in ids]):
            if v is None:
                continue
            rec = loads_state(v)
            if queue is None or rec.get("queue") == queue:
                out.append(rec)
        return out

    def remove_consumer(self, consumer_id: str) -> None:
        p = self._r.pipeline(transaction=False)
        p.delete(P + "consumer:" + consumer_id)
        p.zrem(P + "consumers", consumer_id)
        p.execute()

    # ---- remote kill
    def request_kill(self, queue: str, task_id: str, ttl: float = 3600) -> None:
        now = time.time()
        key = f"{P}kill:{{{queue}}}"
        p = self._r.pipeline(transaction=False)
        p.zadd(key, {task_id: now + ttl})
        p.zremrangebyscore(key, "-inf", now)
        p.execute()

    def kill_requests(self, queue: str) -> set:
        return {t.decode() for t in self._r.zrangebyscore(f"{P}kill:{{{queue}}}", time.time(), _FOREVER)}

    # ---- status records, a batch per key (funboost/state/batched.py): "d:<batch>" its JSON array and
    # "i:<batch>" its task ids, both expiring with the records; "batches" ranks the batch names by their
    # newest start (member "<batch> <oldest start>"), "bexp" by expiry, for the sweep. A record per hash
    # field plus two sorted-set entries cost the server ~8 us and the consumer ~8 us of CPU per record
    # on a 2-core host; a batch costs four commands.
    def save_status_batch(self, table: str, batch: Any, ttl: float) -> None:
        if not len(batch):
            return
        now = time.time()
        base = f"{P}status:{{{table}}}:"
        name = uuid7()
        starts = batch.time_starts
        member = f"{name} {min(starts)!r}"
        ms = max(1, int(ttl * 1000))
        # one round trip, no MULTI (cluster-safe); a pipeline cut short leaves a batch unranked (it expires
        # unseen) or a rank without its batch (skipped when read, swept later)
        p = self._r.pipeline(transaction=False)
        p.set(base + "d:" + name, batch.json, px=ms)
        p.set(base + "i:" + name, ids_text(batch.task_ids), px=ms)
        p.zadd(base + "batches", {member: max(starts)})
        p.zadd(base + "bexp", {member: now + ttl})
        p.execute()
        if now - getattr(self, "_last_sweep", 0.0) > 10.0:  # drop the ranks of expired batches now and then
            self._last_sweep = now
            gone = self._r.zrangebyscore(base + "bexp", "-inf", now, start=0, num=10000)
            if gone:
                p = self._r.pipeline(transaction=False)
                p.zrem(base + "batches", *gone)
                p.zrem(base + "bexp", *gone)
                p.execute()

    def _ranked(self, base: str, lo: Any, until: Optional[float]):
        """(t_max, batch name) of the batches with t_max >= lo and oldest start <= until, newest first.
        Paged by score (not by offset, which shifts while batches are added or swept)."""
        hi: Any = _FOREVER
        seen: set = set()
        page = 200
        while True:
            ranked = self._r.zrevrangebyscore(base + "batches", hi, lo, start=0, num=page, withscores=True)
            fresh = [(m, t) for m, t in ranked if m not in seen]
            for member, t_max in fresh:
                name, t_min = member.decode().split(" ")
                if until is None or float(t_min) <= until:
                    yield t_max, name
            if len(ranked) < page:
                return
            if fresh:
                seen.update(m for m, _ in fresh)
                hi = ranked[-1][1]  # inclusive: batches tied on this score come again and are skipped
            else:
                page *= 2  # a whole page tied on one score: read further

    def _values(self, base: str, key: str, ranked: Iterable) -> Iterator[tuple]:
        """(t_max, name, value of ``key``) for ``ranked``, fetched a few at a time (the first batches
        usually answer a query); expired batches are skipped."""
        want = 2
        ranked = iter(ranked)
        while True:
            group = list(itertools.islice(ranked, want))
            if not group:
                return
            for (t_max, name), value in zip(group, self._r.mget([base + key + name for _, name in group])):
                if value is not None:
                    yield t_max, name, value
            want = min(64, want * 2)

    def query_statuses(self, table: str, *, task_id: Optional[str] = None, success: Optional[bool] = None,
                       since: Optional[float] = None, until: Optional[float] = None,
                       limit: int = 100) -> list[dict]:
        base = f"{P}status:{{{table}}}:"
        keep = record_filter(success, since, until)
        if task_id is not None:
            oldest = oldest_batch_for(task_id)
            needle = id_needle(task_id).encode()
            ranked = self._ranked(base, "-inf" if oldest is None else oldest, None)
            holding = [name for _, name, ids in self._values(base, "i:", ranked) if needle in ids]
            datas = self._r.mget([base + "d:" + name for name in holding]) if holding else []
            return latest_of_task((loads_state(d) for d in datas if d is not None), task_id, keep)
        batches = self._values(base, "d:", self._ranked(base, "-inf" if since is None else since, until))
        return newest_records(((t_max, loads_state(data)) for t_max, _, data in batches), keep, limit)

    def search_statuses(self, table: str, *, success: Optional[bool] = None, since: Optional[float] = None,
                        until: Optional[float] = None, text: Optional[str] = None, task_id: Optional[str] = None,
                        before: Optional[tuple[float, str]] = None, limit: int = 50) -> list[dict]:
        base = f"{P}status:{{{table}}}:"
        hi = until
        if before is not None:
            hi = before[0] if hi is None else min(hi, before[0])
        lo: Any = "-inf" if since is None else since
        if task_id is not None:  # the batches whose ids hold it, then every record of it
            oldest = oldest_batch_for(task_id)
            needle = id_needle(task_id).encode()
            ranked = self._ranked(base, "-inf" if oldest is None else oldest, hi)
            holding = [(t, name) for t, name, ids in self._values(base, "i:", ranked) if needle in ids]
            datas = self._r.mget([base + "d:" + name for _, name in holding]) if holding else []
            batches = [(t, d) for (t, _), d in zip(holding, datas) if d is not None]
            found = search_batches(batches, success=success, since=since, until=until, text=text, before=before,
                                   limit=1000)
            return [r for r in found if r.get("task_id") == task_id][:limit]
        batches = ((t_max, data) for t_max, _, data in self._values(base, "d:", self._ranked(base, lo, hi)))
        # the text is looked for in each batch's bytes before it is parsed
        needle_b = text_needle(text).encode() if text else None
        return search_batches(batches, success=success, since=since, until=until, text=text, before=before,
                              limit=limit, needle=needle_b)

    # ---- documents: a hash per collection, each value {"v": document, "e": expiry or null}
    def doc_put(self, collection: str, key: str, value: dict, ttl: Optional[float] = None) -> None:
        self._r.hset(f"{P}docs:{collection}", key, _dumps({"v": value, "e": (time.time() + ttl) if ttl else None}))

    def doc_get(self, collection: str, key: str) -> Optional[dict]:
        raw = self._r.hget(f"{P}docs:{collection}", key)
        if raw is None:
            return None
        item = loads_state(raw)
        return item["v"] if item.get("e") is None or item["e"] >= time.time() else None

    def doc_list(self, collection: str) -> dict[str, dict]:
        now = time.time()
        out = {}
        for k, raw in sorted(self._r.hgetall(f"{P}docs:{collection}").items()):
            item = loads_state(raw)
            if item.get("e") is None or item["e"] >= now:
                out[k.decode()] = item["v"]
        return out

    def doc_delete(self, collection: str, key: str) -> bool:
        return bool(self._r.hdel(f"{P}docs:{collection}", key))

    # ---- metrics: a hash per (resolution, bucket), field "<queue>\x1f<source>", expiring with the bucket
    def metrics_put(self, rows: list) -> None:
        if not rows:
            return
        p = self._r.pipeline(transaction=False)
        for r in rows:
            key = f"{P}metrics:{r.res}:{r.bucket}"
            p.hset(key, f"{r.queue}\x1f{r.source}", _dumps(r.data))
            p.expire(key, max(1, int(r.ttl)))
        p.execute()

    def metrics_get(self, res: str, since: int, queue: Optional[str] = None) -> list:
        width = RESOLUTIONS[res][0]
        now = time.time()
        buckets = list(range(bucket_of(since, res), bucket_of(now, res) + width, width))
        p = self._r.pipeline(transaction=False)
        for b in buckets:
            p.hgetall(f"{P}metrics:{res}:{b}")
        out = []
        for b, fields in zip(buckets, p.execute()):
            for f, raw in fields.items():
                q, _, src = f.decode().partition("\x1f")
                if queue is None or q == queue:
                    out.append(MetricRow(res, b, q, src, loads_state(raw)))
        return out

    # ---- distributed locks: a key holding the owner, expiring with the lock
    def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        script = get_handle(self._spec).script("state_lock_acquire", _ACQUIRE)
        return bool(script(keys=[P + "lock:" + name], args=[owner, max(1, int(ttl * 1000))]))

    def release_lock(self, name: str, owner: str) -> bool:
        script = get_handle(self._spec).script("state_lock_release", _RELEASE)
        return bool(script(keys=[P + "lock:" + name], args=[owner]))

    @classmethod
    def check_available(cls, url: Optional[str] = None) -> Optional[str]:
        return _check_available(RedisOptions(url=url or os.environ.get(ENV_URL) or DEFAULT_URL))

    def close(self) -> None:
        pass
