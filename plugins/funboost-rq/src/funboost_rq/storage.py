"""rq's Redis storage as funboost uses it: the client, moving due scheduled jobs, pulling jobs, and the
leases that bring a dead worker's jobs back within seconds.

rq keeps a running job in the queue's ``StartedJobRegistry`` (a sorted set of ``<job id>:<execution id>``
scored with an expiry) and, between the worker's ``BLMOVE`` and that registration, in the queue's
intermediate list. When a worker dies, rq's own maintenance moves its jobs to the ``FailedJobRegistry``
once their entry expired (minutes later, and as *failed*). funboost-rq re-runs them instead:

* every funboost process that holds jobs (a worker host, a broker that pulled with ``fetch``) has a
  :class:`~funboost.engine.liveness.ConsumerLease`, stored in the hash ``funboost:rq:leases``; its rq
  workers are named ``funboost-<lease id>.<n>``, its pulled entries ``<job id>:fbpull-<lease id>``;
* each renewal also pushes the expiry of the entries it holds forward, so rq's maintenance never
  declares a living worker's long job abandoned;
* every ``reclaim_interval`` a consumer of the queue looks at the started registry: an entry whose
  holder's lease is stale, or whose process is gone from this host (an immediate verdict after
  ``kill -9``), goes back to the front of the queue, atomically (``ZREM`` decides who moves it);
  a job id left in the intermediate list (its worker died between ``BLMOVE`` and registering it) goes
  back too: at once when the worker that took it had noted its lease next to it and that lease is dead;
  after ``LIMBO_BACKSTOP_SECONDS`` when nobody noted it (the worker died in the instant between the two).
  A time limit alone would re-run the job of a living worker stalled in that window (a loaded machine
  with a short ``heartbeat_timeout`` did: found by tests/reliability, SIGKILL at full size).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterable, Optional

from redis import Redis
from rq import Queue
from rq.job import Job

from funboost.engine.liveness import ConsumerLease, LeaseInfo
from funboost.process_local import ProcessLocalDict

from funboost_rq.options import RqOptions

LEASES_KEY = "funboost:rq:leases"
LIMBO_KEY = "funboost:rq:limbo:{0}"  # first seen of intermediate-list ids that are not registered yet
LIMBO_HOLDER_KEY = "funboost:rq:limbo_holder:{0}"  # intermediate-list id -> lease id of the worker that took it
# an intermediate-list id nobody noted goes back after this long (or heartbeat_timeout, if longer)
LIMBO_BACKSTOP_SECONDS = 60.0
WORKER_PREFIX = "funboost-"
PULL_PREFIX = "fbpull-"

_clients: ProcessLocalDict[str, Redis] = ProcessLocalDict()
#: no practical cap (redis-py's own default before 7.0): connections are bounded by the threads using them
_POOL_LIMIT = 2**31 - 1


def redis_client(options: RqOptions) -> Redis:
    """This process's Redis client for the options' URL (a forked child makes its own)."""
    url = options.resolved_redis_url()
    # shared by every SimpleWorker thread of the process (each blocks on its queue holding a connection),
    # the publishers and the lease ticker: redis-py >= 7 caps a pool at 100 connections by default, which
    # concurrent_num near or above 100 exhausts (MaxConnectionsError). The thread count bounds it instead.
    return _clients.get_or_create(url, lambda: Redis.from_url(url, health_check_interval=30,
                                                              max_connections=_POOL_LIMIT))


def new_lease_id(_queue: str = "") -> str:
    """A consumer id usable inside rq's keys (no ``:``) and worker names (no ``.``)."""
    return uuid.uuid4().hex


def entry_ttl(options: RqOptions) -> float:
    """Expiry given to held started-registry entries: far beyond a renewal, so only a dead holder's lapse."""
    return max(60.0, 3 * options.heartbeat_timeout)


# ---------------------------------------------------------------------------------------- scripts
_PROMOTE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', ARGV[3] .. id, 'status', 'queued')
  redis.call('RPUSH', KEYS[2], id)
end
return #ids
"""

_PULL = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  redis.call('ZADD', KEYS[2], ARGV[2], id .. ':' .. ARGV[3])
  redis.call('HSET', ARGV[4] .. id, 'status', 'started')  -- as rq's own bookkeeping of a started job
  out[#out + 1] = id
end
return out
"""

# KEYS: started, queue, job hash, execution hash; ARGV: entry, job id, front (1/0)
_GIVE_BACK = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[4])
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'status', 'queued')
    if ARGV[3] == '1' then redis.call('LPUSH', KEYS[2], ARGV[2]) else redis.call('RPUSH', KEYS[2], ARGV[2]) end
  end
  return 1
end
return 0
"""

_FROM_LIMBO = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


class QueueKeys:
    """rq's Redis keys of one queue."""

    def __init__(self, queue: Queue) -> None:
        self.name = queue.name
        self.queue = queue.key
        self.intermediate = queue.intermediate_queue_key
        self.started = queue.started_job_registry.key
        self.scheduled = queue.scheduled_job_registry.key
        self.limbo = LIMBO_KEY.format(queue.name)
        self.limbo_holder = LIMBO_HOLDER_KEY.format(queue.name)


def job_key(job_id: str) -> str:
    return Job.redis_job_namespace_prefix + job_id


def execution_key(entry: str) -> str:
    return f"rq:execution:{entry}"


def promote_due(conn: Redis, keys: QueueKeys, now: Optional[float] = None, limit: int = 1000) -> int:
    """Move the queue's scheduled jobs that are due to the end of the queue (what rq's scheduler does,
    made atomic: a job is moved once even when several processes poll)."""
    now = time.time() if now is None else now
    return int(conn.eval(_PROMOTE, 2, keys.scheduled, keys.queue, now, limit, job_key("")))


def pull(conn: Redis, keys: QueueKeys, max_count: int, holder: str, expiry: float) -> list[str]:
    """Take up to ``max_count`` job ids off the queue, registered as started by ``holder`` in one step."""
    ids = conn.eval(_PULL, 2, keys.queue, keys.started, max_count, expiry, PULL_PREFIX + holder, job_key(""))
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def give_back(conn: Redis, keys: QueueKeys, entry: str, job_id: str, front: bool = True) -> bool:
    """Put a started job back into its queue (once: the registry entry decides)."""
    return bool(conn.eval(_GIVE_BACK, 4, keys.started, keys.queue, job_key(job_id), execution_key(entry),
                          entry, job_id, "1" if front else "0"))


def note_taken(conn: Redis, keys: QueueKeys, job_id: str, lease_id: str) -> None:
    """A worker of lease ``lease_id`` took ``job_id`` into the intermediate list (right after rq's BLMOVE):
    while that lease lives, the reclaim leaves the id alone. ``conn`` may be a pipeline."""
    conn.hset(keys.limbo_holder, job_id, lease_id)


def from_intermediate(conn: Redis, keys: QueueKeys, job_id: str) -> bool:
    """Put a job id that a worker moved into the intermediate list (and did not register) back to the
    front of its queue (once: ``LREM`` decides)."""
    return bool(conn.eval(_FROM_LIMBO, 2, keys.intermediate, keys.queue, job_id))


# ---------------------------------------------------------------------------------------- leases
def write_lease(conn: Redis, info: LeaseInfo, entries_by_started_key: dict[str, list[str]], expiry: float) -> None:
    """The lease renewal: the lease itself and the expiry of every started entry the holder has."""
    pipe = conn.pipeline(transaction=False)
    pipe.hset(LEASES_KEY, info.consumer_id, json.dumps([info.host, info.pid, info.last_seen]))
    for started, entries in entries_by_started_key.items():
        if entries:
            pipe.zadd(started, {e: expiry for e in entries}, xx=True)
    pipe.execute()


def drop_lease(conn: Redis, consumer_id: str) -> None:
    conn.hdel(LEASES_KEY, consumer_id)


def read_leases(conn: Redis) -> dict[str, LeaseInfo]:
    out: dict[str, LeaseInfo] = {}
    for k, v in conn.hgetall(LEASES_KEY).items():
        cid = k.decode() if isinstance(k, bytes) else str(k)
        try:
            host, pid, seen = json.loads(v)
            out[cid] = LeaseInfo(cid, str(host), int(pid), float(seen))
        except (ValueError, TypeError):
            continue
    return out


def holders_of(conn: Redis, entries: list[str]) -> dict[str, Optional[str]]:
    """The funboost lease id holding each started entry (None: an entry of a plain rq worker, or one whose
    execution record expired: rq's own cleanup decides). Pulled entries name their holder; a worker's
    entry names its execution, whose worker is ``funboost-<lease id>.<n>`` (one pipelined read)."""
    out: dict[str, Optional[str]] = {}
    lookups = []
    for entry in entries:
        execution_id = entry.partition(":")[2]
        if execution_id.startswith(PULL_PREFIX):
            out[entry] = execution_id[len(PULL_PREFIX):]
        else:
            lookups.append(entry)
    if lookups:
        pipe = conn.pipeline(transaction=False)
        for entry in lookups:
            pipe.hget(execution_key(entry), "worker_name")
        for entry, worker in zip(lookups, pipe.execute()):
            name = worker.decode() if isinstance(worker, bytes) else (worker or "")
            out[entry] = name[len(WORKER_PREFIX):].rsplit(".", 1)[0] if name.startswith(WORKER_PREFIX) else None
    return out


def reclaim(conn: Redis, lease: ConsumerLease, queues: Iterable[QueueKeys]) -> int:
    """Put back the started jobs of dead funboost holders, and ids stranded in the intermediate list."""
    moved = 0
    leases: Optional[dict[str, LeaseInfo]] = None
    now = time.time()
    for keys in queues:
        entries = [e.decode() if isinstance(e, bytes) else str(e) for e in conn.zrange(keys.started, 0, -1)]
        holders = holders_of(conn, entries)
        held = {h for h in holders.values() if h is not None}
        if held:
            if leases is None:
                leases = read_leases(conn)
            dead = set(lease.dead_holders(held, leases, now))
            for entry, holder in holders.items():
                if holder in dead and give_back(conn, keys, entry, entry.partition(":")[0]):
                    moved += 1
        moved += _rescue_limbo(conn, keys, {e.partition(":")[0] for e in entries}, now, lease)
    return moved


def _rescue_limbo(conn: Redis, keys: QueueKeys, started_ids: set[str], now: float, lease: ConsumerLease) -> int:
    # the notes first: a note written after this read belongs to an id this pass leaves alone anyway
    noted = {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
             for k, v in conn.hgetall(keys.limbo_holder).items()}
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in conn.lrange(keys.intermediate, 0, -1)]
    seen = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in conn.hgetall(keys.limbo).items()}
    waiting = [j for j in ids if j not in started_ids]
    dead: set[str] = set()
    holders = {noted[j] for j in waiting if j in noted}
    if holders:
        dead = set(lease.dead_holders(holders, read_leases(conn), now))
    backstop = max(LIMBO_BACKSTOP_SECONDS, lease.heartbeat_timeout)
    moved = 0
    pipe = conn.pipeline(transaction=False)
    for job_id in waiting:
        holder = noted.get(job_id)
        first = seen.get(job_id)
        if holder is not None:
            rescue = holder in dead  # a living worker is about to register it: leave it
        elif first is None:
            pipe.hsetnx(keys.limbo, job_id, now)
            rescue = False
        else:
            rescue = now - first > backstop
        if rescue:
            moved += int(from_intermediate(conn, keys, job_id))
            pipe.hdel(keys.limbo, job_id)
            pipe.hdel(keys.limbo_holder, job_id)
    gone = [j for j in seen if j not in ids or j in started_ids]
    if gone:
        pipe.hdel(keys.limbo, *gone)
    gone_noted = [j for j in noted if j not in ids or j in started_ids]
    if gone_noted:
        pipe.hdel(keys.limbo_holder, *gone_noted)
    pipe.execute()
    return moved
