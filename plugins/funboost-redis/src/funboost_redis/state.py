"""RedisStateBackend: RPC results, dedup filters, flags, consumer heartbeats, remote-kill requests and
status records in Redis, shared by every process and host that reaches the server.

Chosen with ``BoosterParams(state_backend="redis")`` or env ``FUNBOOST_STATE_BACKEND=redis``; the URL comes
from ``FUNBOOST_STATE_REDIS_URL`` (passed by core), else ``FUNBOOST_REDIS_URL``, else
``redis://127.0.0.1:6379/0``. Keys live under ``funboost:state:``; per-queue keys are hash-tagged.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from funboost.engine.status import expand_record, record_success
from funboost.state.base import StateBackend, dumps_state, dumps_state_bytes, loads_state

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


# status records: a whole batch goes as three arguments (the task ids as a JSON array, the start times as
# text separated by spaces, the records' JSON separated by newlines, which JSON text never contains
# unescaped) and the server unpacks them. Packing three commands with two arguments per record in
# redis-py cost the consumer process several microseconds of GIL time per record; this costs well under one.
_SAVE_STATUSES = """
local ids = cjson.decode(ARGV[1])
local exp = ARGV[4]
local scores, recs = {}, {}
for s in string.gmatch(ARGV[2], "%S+") do scores[#scores + 1] = s end
for r in string.gmatch(ARGV[3], "[^\\n]+") do recs[#recs + 1] = r end
local n = #ids
if #scores ~= n or #recs ~= n then return redis.error_reply("status batch: mismatched lengths") end
local chunk = 500
for first = 1, n, chunk do
  local last = math.min(first + chunk - 1, n)
  local h, zt, ze = {}, {}, {}
  for i = first, last do
    h[#h + 1] = ids[i]; h[#h + 1] = recs[i]
    zt[#zt + 1] = scores[i]; zt[#zt + 1] = ids[i]
    ze[#ze + 1] = exp; ze[#ze + 1] = ids[i]
  end
  redis.call('HSET', KEYS[1], unpack(h))
  redis.call('ZADD', KEYS[2], unpack(zt))
  redis.call('ZADD', KEYS[3], unpack(ze))
end
return n
"""
_SCRIPT_CHUNK = 2000  # records per script call: keeps each call short for the single-threaded server

_dumps = dumps_state  # orjson when available: records are serialized on the consumer's time


class RedisStateBackend(StateBackend):
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

    # ---- status records: hash task_id -> record, sorted set task_id -> time_start, expiry sorted set
    def save_statuses(self, table: str, records: list[dict], ttl: float) -> None:
        self._save_items(table, [r["task_id"] for r in records], [r.get("time_start") for r in records],
                         [dumps_state_bytes(r) for r in records], ttl)

    def save_status_batch(self, table: str, batch: Any, ttl: float) -> None:
        # each record stored as the engine serialised it: nothing re-encoded
        self._save_items(table, batch.task_ids, batch.time_starts, batch.rows, ttl)

    def _save_items(self, table: str, task_ids: list, time_starts: list, rows: list, ttl: float) -> None:
        """``rows``: each record's JSON (bytes), in the order of ``task_ids`` / ``time_starts``."""
        if not task_ids:
            return
        now = time.time()
        base = f"{P}status:{{{table}}}:"
        keys = [base + "rec", base + "by_time", base + "exp"]
        script = get_handle(self._spec).script("state_save_statuses", _SAVE_STATUSES)
        for i in range(0, len(task_ids), _SCRIPT_CHUNK):
            j = i + _SCRIPT_CHUNK
            # scores as text: Lua numbers would be re-printed with 14 significant digits
            script(keys=keys, args=[_dumps(task_ids[i:j]), " ".join([repr(float(ts or now)) for ts in time_starts[i:j]]),
                                    b"\n".join(rows[i:j]), repr(now + ttl)])
        if now - getattr(self, "_last_sweep", 0.0) > 10.0:  # drop expired records now and then
            self._last_sweep = now
            expired = self._r.zrangebyscore(base + "exp", "-inf", now, start=0, num=10000)
            if expired:
                p = self._r.pipeline(transaction=False)
                p.hdel(base + "rec", *expired)
                p.zrem(base + "by_time", *expired)
                p.zrem(base + "exp", *expired)
                p.execute()

    def query_statuses(self, table: str, *, task_id: Optional[str] = None, success: Optional[bool] = None,
                       since: Optional[float] = None, until: Optional[float] = None,
                       limit: int = 100) -> list[dict]:
        base = f"{P}status:{{{table}}}:"
        now = time.time()
        if task_id is not None:
            exp = self._r.zscore(base + "exp", task_id)
            v = self._r.hget(base + "rec", task_id)
            rows = [loads_state(v)] if v is not None and exp is not None and exp >= now else []
        else:
            lo = since if since is not None else "-inf"
            hi = until if until is not None else _FOREVER
            rows = []
            offset = 0
            page = max(limit, 100)
            while len(rows) < limit:  # newest first, filtered, paged
                ids = self._r.zrevrangebyscore(base + "by_time", hi, lo, start=offset, num=page)
                if not ids:
                    break
                offset += len(ids)
                p = self._r.pipeline(transaction=False)
                p.hmget(base + "rec", ids)
                p.zmscore(base + "exp", ids)
                vals, exps = p.execute()
                for v, e in zip(vals, exps):
                    if v is None or e is None or e < now:
                        continue
                    r = loads_state(v)
                    if success is None or record_success(r) == success:
                        rows.append(r)
        return [expand_record(r) for r in rows[:limit]]

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
