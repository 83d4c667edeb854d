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
* a funboost worker takes a job id into rq's intermediate list and notes its lease next to it
  (``funboost:rq:limbo_holder:<queue>``) in one script (:func:`take`); when the queue is empty it blocks
  with ``BLMOVE`` into a list of its own (``funboost:rq:taking:<queue>:<worker name>``, listed in
  ``funboost:rq:takers:<queue>``) and then moves the id on with the same script. So every id a funboost
  worker holds is, at every moment, somewhere that names its holder;
* every ``reclaim_interval`` a consumer of the queue looks at the started registry: an entry whose
  holder's lease is stale, or whose process is gone from this host (an immediate verdict after
  ``kill -9``), goes back to the front of the queue, atomically (``ZREM`` decides who moves it), and so
  does the copy its worker had not yet removed from the intermediate list (it died between rq's
  registration and that removal); a dead worker's own list and the ids in the intermediate list noted
  under a dead lease go back too. A job therefore runs again within about ``heartbeat_timeout`` of its
  worker's death (at once after ``kill -9`` on the same host);
* an id in the intermediate list that nobody noted (a plain rq worker on the same queue, or a funboost-rq
  version that noted after the take) goes back after ``LIMBO_BACKSTOP_SECONDS``. A time limit alone
  would re-run the job of a living worker stalled in that window (a loaded machine with a short
  ``heartbeat_timeout`` did: found by tests/reliability, SIGKILL at full size).
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
TAKING_KEY = "funboost:rq:taking:{0}:{1}"  # a worker's own list: the id its BLMOVE took, until noted
TAKERS_KEY = "funboost:rq:takers:{0}"  # the worker names that have such a list on the queue
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

# KEYS: started, queue, job hash, execution hash, intermediate, notes; ARGV: entry, job id, holder.  A dead
# holder's started job back to the front of the queue, with the copy it left in the intermediate list
# (it died between rq's registration and rq's LREM; that copy must not run the job a second time).
_GIVE_BACK_DEAD = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[4])
  if redis.call('HGET', KEYS[6], ARGV[2]) == ARGV[3] then
    redis.call('LREM', KEYS[5], 1, ARGV[2])
    redis.call('HDEL', KEYS[6], ARGV[2])
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'status', 'queued')
    redis.call('LPUSH', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
"""

# KEYS: the worker's own list, queue, intermediate, notes; ARGV: lease id.  Take the next job id (first
# one the worker's BLMOVE left in its own list) into rq's intermediate list, noting whose it is.
_TAKE = """
local id = redis.call('LPOP', KEYS[1])
if not id then id = redis.call('LPOP', KEYS[2]) end
if id then
  redis.call('RPUSH', KEYS[3], id)
  redis.call('HSET', KEYS[4], id, ARGV[1])
end
return id
"""

# KEYS: the worker's own list, queue, takers; ARGV: worker name.  A worker that ended or died: what its own
# list holds goes back to the front of the queue, in order.
_RELEASE_TAKER = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
redis.call('SREM', KEYS[3], ARGV[1])
return n
"""

# KEYS: intermediate, notes; ARGV: id, holder, ...  Forget the notes of ids that left the intermediate list
# (unless noted again meanwhile, or back in the list).
_FORGET_NOTES = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] and not redis.call('LPOS', KEYS[1], ARGV[i]) then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
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
        self.takers = TAKERS_KEY.format(queue.name)

    def taking(self, worker_name: str) -> str:
        """The list a worker's ``BLMOVE`` takes into (see :func:`take`)."""
        return TAKING_KEY.format(self.name, worker_name)


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
    """Note that a worker of lease ``lease_id`` holds ``job_id`` in the intermediate list: while that lease
    lives, the reclaim leaves the id alone. ``conn`` may be a pipeline."""
    conn.hset(keys.limbo_holder, job_id, lease_id)


def take(conn: Redis, keys: QueueKeys, worker_name: str, lease_id: str) -> Optional[str]:
    """Move the next job id into rq's intermediate list and note lease ``lease_id`` next to it, in one
    script (what rq's ``LMOVE`` does, plus the note). An id the worker's own list holds (its ``BLMOVE``,
    :func:`block_for_job`) comes first. None: the queue is empty."""
    got = conn.eval(_TAKE, 4, keys.taking(worker_name), keys.queue, keys.intermediate, keys.limbo_holder, lease_id)
    return None if got is None else (got.decode() if isinstance(got, bytes) else str(got))


def block_for_job(conn: Redis, keys: QueueKeys, worker_name: str, timeout: float) -> bool:
    """Wait up to ``timeout`` for a job id, moved into the worker's own list (``BLMOVE``); True if one came.
    The worker's name goes into the queue's takers set first, in the same round trip, so a reclaim pass
    finds the list should the worker die before :func:`take` moved the id on (again after a stall during
    which a reclaim pass judged the worker dead and removed its name)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.sadd(keys.takers, worker_name)
        pipe.blmove(keys.queue, keys.taking(worker_name), timeout, "LEFT", "RIGHT")
        return pipe.execute()[1] is not None


def register_taker(conn: Redis, keys: QueueKeys, worker_name: str) -> None:
    conn.sadd(keys.takers, worker_name)


def release_taker(conn: Redis, keys: QueueKeys, worker_name: str) -> int:
    """A worker ended (or died): its own list goes back to the front of the queue, its name leaves the
    takers set."""
    return int(conn.eval(_RELEASE_TAKER, 3, keys.taking(worker_name), keys.queue, keys.takers, worker_name))


def lease_of_worker(worker_name: str) -> Optional[str]:
    """The lease id in a funboost worker's name (``funboost-<lease id>.<n>``); None for another name."""
    return worker_name[len(WORKER_PREFIX):].rsplit(".", 1)[0] if worker_name.startswith(WORKER_PREFIX) else None


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
            out[entry] = lease_of_worker(name)
    return out


def give_back_dead(conn: Redis, keys: QueueKeys, entry: str, job_id: str, holder: str) -> bool:
    """Put a dead holder's started job back to the front of its queue (once: the registry entry decides),
    with the copy of its id the holder left in the intermediate list, if any."""
    return bool(conn.eval(_GIVE_BACK_DEAD, 6, keys.started, keys.queue, job_key(job_id), execution_key(entry),
                          keys.intermediate, keys.limbo_holder, entry, job_id, holder))


def reclaim(conn: Redis, lease: ConsumerLease, queues: Iterable[QueueKeys]) -> int:
    """Put back the started jobs of dead funboost holders, and ids stranded in the intermediate list or in
    a dead worker's own list."""
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
                if holder in dead and give_back_dead(conn, keys, entry, entry.partition(":")[0], holder):
                    moved += 1
        moved += _rescue_takers(conn, keys, now, lease)
        # the registry again: an id given back above is no longer started (its stale copy went with it)
        started_ids = {(e.decode() if isinstance(e, bytes) else str(e)).partition(":")[0]
                       for e in conn.zrange(keys.started, 0, -1)}
        moved += _rescue_limbo(conn, keys, started_ids, now, lease)
    return moved


def _rescue_takers(conn: Redis, keys: QueueKeys, now: float, lease: ConsumerLease) -> int:
    """The own lists of dead workers (killed between their BLMOVE and the take) back into the queue."""
    names = {(n.decode() if isinstance(n, bytes) else str(n)) for n in conn.smembers(keys.takers)}
    by_lease = {name: lease_of_worker(name) for name in names}
    holders = {h for h in by_lease.values() if h is not None}
    if not holders:
        return 0
    dead = set(lease.dead_holders(holders, read_leases(conn), now))
    return sum(release_taker(conn, keys, name) for name, holder in by_lease.items() if holder in dead)


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
    pipe.execute()
    # a note stays while its id is in the intermediate list, also while the id is started: should its holder
    # die before rq's LREM, the note tells whose the stale copy is (give_back_dead)
    gone_noted = [x for j in noted if j not in ids for x in (j, noted[j])]
    if gone_noted:
        conn.eval(_FORGET_NOTES, 2, keys.intermediate, keys.limbo_holder, *gone_noted)
    return moved
