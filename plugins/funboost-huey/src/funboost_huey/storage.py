"""Taking huey tasks without losing them when the taker dies.

huey's ``RedisStorage.dequeue`` pops a task off the list (``BRPOP``) before a worker runs it: a
consumer killed mid-task loses it. funboost-huey keeps huey's own keys (``huey.redis.<name>`` for
the queue, ``huey.schedule.<name>`` for delayed tasks, so plain huey producers and tools see the
same queue) and adds, per taker (a huey consumer of this plugin, or a broker that pulls with
``fetch``):

* ``funboost.huey.inflight.<name>.<holder>``: a list; a task is *moved* into it from the queue in
  one command (``BLMOVE``), and removed only once it ended (settled), was handed back unchanged, or
  went to huey's schedule (one Lua script each: it is in exactly one place at every moment);
* ``funboost.huey.leases.<name>``: a hash ``holder -> lease`` (core's
  :class:`funboost.engine.liveness.ConsumerLease`), renewed every ``heartbeat_interval`` by the
  process's liveness ticker however long tasks run.

Every taker also runs reclaim passes: a holder whose lease is older than ``heartbeat_timeout``, or
missing, or whose process on this host is gone (an immediate verdict after ``kill -9``), has its
in-flight list moved back to the front of the queue (one Lua script, which first checks that the
lease is still the one judged dead). A living holder's long task is therefore never handed out
twice, and a dead holder's tasks come back within about a reclaim interval.

Due delayed tasks are moved from the schedule to the queue by one script as well (huey's own
scheduler pops them, then enqueues them: a kill in between would lose them).

``SqliteHuey`` keeps huey's semantics (its ``dequeue`` deletes the row): :class:`SqliteQueueOps` is
at-most-once, and says so.

Needs Redis >= 6.2 (``LMOVE`` / ``BLMOVE``).
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any, Callable, Optional

from funboost.engine.liveness import ConsumerLease, LeaseInfo

from funboost_huey.options import HueyOptions

INFLIGHT_PREFIX = "funboost.huey.inflight."
LEASES_PREFIX = "funboost.huey.leases."

# KEYS: inflight, queue; ARGV: data.  Hand one taken task back to the front of the queue.
_GIVE_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0"""

# KEYS: inflight, schedule; ARGV: data, score.  A taken task that is not due yet goes to huey's schedule.
_TO_SCHEDULE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 1
end
return 0"""

# KEYS: schedule, queue; ARGV: now score, limit.  Due delayed tasks to the back of the queue (as huey's
# scheduler enqueues them), atomically.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, data in ipairs(due) do
  redis.call('ZREM', KEYS[1], data)
  redis.call('LPUSH', KEYS[2], data)
end
return #due"""

# KEYS: inflight, another queue; ARGV: data.  A taken task that belongs to another queue goes there (to the
# front: it waited already).
_FORWARD = _GIVE_BACK

# KEYS: old queue, queue; ARGV: data.  A task left in the old queue moves to the front of this one.
_ADOPT = _GIVE_BACK

# KEYS: old schedule, schedule; ARGV: data, score.  A delayed task left in the old schedule moves to this one.
_ADOPT_DELAYED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 1
end
return 0"""

# KEYS: leases, inflight, queue; ARGV: holder, the lease judged dead ('' = none).  Put a dead holder's
# tasks back unless it renewed its lease meanwhile.
_RECLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then cur = '' end
if cur ~= ARGV[2] then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT') do
  n = n + 1
end
redis.call('HDEL', KEYS[1], ARGV[1])
return n"""

# KEYS: leases, inflight, queue; ARGV: holder.  A closing holder gives its unsettled tasks back.
_RELEASE = """
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT') do
  n = n + 1
end
redis.call('HDEL', KEYS[1], ARGV[1])
return n"""


# KEYS: queue, the taker's in-flight list, [huey's result hash,] the in-flight list of each settle;
# ARGV: the number of settles, the settled tasks, then revoke ids whose flags huey clears after a run.
# A worker thread's deferred settles and flag clears, then its next task, in one command; with the task,
# the size of huey's result hash (0: nothing is revoked, huey's revocation lookup can be skipped; -1: no
# hash given).
_TAKE = """
local n = tonumber(ARGV[1])
local hash = nil
if #KEYS == n + 3 then hash = KEYS[3] end
local first = #KEYS - n
for i = 1, n do
  redis.call('LREM', KEYS[first + i], 1, ARGV[1 + i])
end
if hash then
  for i = n + 2, #ARGV do
    redis.call('HDEL', hash, ARGV[i])
  end
end
local data = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not data then
  return false
end
if hash then
  return {data, redis.call('HLEN', hash)}
end
return {data, -1}"""


class QueueOps:
    """What funboost-huey does with one huey queue beyond huey's own API: take / settle / give back a
    task under a holder, move delayed tasks, sizes, purge. One per Huey instance."""

    #: a SIGKILLed taker's tasks come back
    at_least_once: bool = False

    def __init__(self, huey: Any) -> None:
        self.huey = huey
        self.storage = huey.storage

    def open_holder(self, holder_id: str, options: HueyOptions) -> "Holder":
        return Holder(self, holder_id, None)

    def take(self, holder: str, timeout: float) -> Optional[bytes]:
        raise NotImplementedError

    def take_task(self, holder: str, timeout: float) -> tuple[Optional[bytes], bool]:
        """:meth:`take` for huey's worker: the task, and True when the storage saw, as it took the task, that
        nothing at all was revoked (huey's per-task revocation lookup can then be skipped)."""
        return self.take(holder, timeout), False

    def clear_soon(self, key: str) -> bool:
        """Delete huey's entry ``key`` (a revoke flag cleared after a run) with this thread's next take;
        False: not supported here, delete it now."""
        return False

    def settle(self, holder: str, data: bytes) -> None:
        """The task ended (whatever its outcome): forget it."""

    def settle_soon(self, holder: str, data: bytes) -> None:
        """:meth:`settle`, possibly sent with this thread's next :meth:`take` (one round trip less per
        task); :meth:`release` sends whatever is still unsent."""
        self.settle(holder, data)

    def flush_thread(self) -> None:
        """Send this thread's unsent settles now."""

    def give_back(self, holder: str, data: bytes) -> None:
        raise NotImplementedError

    def forward(self, holder: str, data: bytes, huey_queue: str) -> None:
        """A taken task that belongs to the huey queue named ``huey_queue``: move it there."""
        raise NotImplementedError

    def schedule(self, holder: str, data: bytes, eta: dt.datetime) -> None:
        raise NotImplementedError

    def move_due(self) -> int:
        raise NotImplementedError

    def in_flight(self) -> Optional[int]:
        return None

    def purge(self) -> int:
        raise NotImplementedError

    def release(self, holder: str) -> int:
        """A closing holder: give back what it still holds, drop its lease."""
        return 0


class Holder:
    """One taker (its id and, on Redis, its lease)."""

    def __init__(self, ops: QueueOps, holder_id: str, lease: Optional[ConsumerLease]) -> None:
        self.ops = ops
        self.id = holder_id
        self.lease = lease

    def current(self) -> str:
        """The holder id to take under now (a forked child takes a new id)."""
        if self.lease is not None:
            self.lease.check_fork()
            if not self.lease.running:
                self.lease.start()
            elif self.lease.renew_due():
                # a holder judged dead while it stalled (its lease deleted) writes it again before it
                # takes anything, so that what it takes next is covered by a lease
                self.lease.renew()
            return self.lease.consumer_id
        return self.id

    def close(self, give_back: bool = True) -> None:
        """Stop renewing; give back unsettled tasks and drop the lease (``give_back``), or leave the lease
        to expire (tasks of this process may still run)."""
        if self.lease is not None:
            self.lease.stop()
            if give_back:
                self.ops.release(self.lease.consumer_id)


class RedisQueueOps(QueueOps):
    at_least_once = True

    def __init__(self, huey: Any) -> None:
        super().__init__(huey)
        s = self.storage
        self.conn = s.conn
        self.queue_key: str = s.queue_key
        self.schedule_key: str = s.schedule_key
        self.leases_key = f"{LEASES_PREFIX}{s.name}"
        self._inflight_prefix = f"{INFLIGHT_PREFIX}{s.name}."
        self._give_back = self.conn.register_script(_GIVE_BACK)
        self._to_schedule = self.conn.register_script(_TO_SCHEDULE)
        self._move_due = self.conn.register_script(_MOVE_DUE)
        self._reclaim = self.conn.register_script(_RECLAIM)
        self._release = self.conn.register_script(_RELEASE)
        self._take = self.conn.register_script(_TAKE)
        self._forward = self.conn.register_script(_FORWARD)
        self._adopt = self.conn.register_script(_ADOPT)
        self._adopt_delayed = self.conn.register_script(_ADOPT_DELAYED)
        # huey's RedisStorage keeps results, revoke flags and locks in one hash: its size tells whether
        # anything is revoked (another storage class: no such shortcut)
        result_key = getattr(s, "result_key", None)
        self._result_key: Optional[str] = result_key if isinstance(result_key, str) else None
        # settles and revoke-flag clears a worker thread sends with its next take: per thread, and all of
        # them for release()
        self._local = threading.local()
        self._pending: list[_Pending] = []
        self._unsent_lock = threading.Lock()

    def inflight_key(self, holder: str) -> str:
        return self._inflight_prefix + holder

    # ------------------------------------------------------------------ leases
    def open_holder(self, holder_id: str, options: HueyOptions) -> Holder:
        judge: list[ConsumerLease] = []  # the holder's own lease judges the others in its reclaim passes
        lease = ConsumerLease(self.storage.name, holder_id, heartbeat_interval=options.heartbeat_interval,
                              heartbeat_timeout=options.heartbeat_timeout, renew=self._renew,
                              reclaim=lambda: self.reclaim(judge[0]), reclaim_interval=options.reclaim_interval,
                              check_pid=options.check_pid)
        judge.append(lease)
        lease.start()  # the lease exists before anything is taken under it
        self.reclaim(lease)  # a restarted consumer recovers its predecessor's tasks at once
        return Holder(self, holder_id, lease)

    def _renew(self, info: LeaseInfo) -> None:
        self.conn.hset(self.leases_key, info.consumer_id, _lease_json(info))

    def reclaim(self, judge: ConsumerLease) -> int:
        """Put back the tasks of holders that ``judge`` (a living holder's lease) finds dead; how many."""
        raw = self.conn.hgetall(self.leases_key)
        leases: dict[str, LeaseInfo] = {}
        texts: dict[str, str] = {}
        for k, v in raw.items():
            holder, text = _text(k), _text(v)
            texts[holder] = text
            info = _lease_from_json(holder, text)
            if info is not None:
                leases[holder] = info
        holders = set(texts)
        moved = 0
        for holder in judge.dead_holders(holders, leases):
            n = self._reclaim(keys=[self.leases_key, self.inflight_key(holder), self.queue_key],
                              args=[holder, texts.get(holder, "")])
            moved += max(0, int(n))
        return moved

    def reclaim_dead_of(self, other: "RedisQueueOps", options: HueyOptions) -> int:
        """Reclaim pass on ``other`` (another queue's keys), judged as this queue's holders would be."""
        judge = ConsumerLease(other.storage.name, f"adopt-{self.storage.name}",
                              heartbeat_interval=options.heartbeat_interval,
                              heartbeat_timeout=options.heartbeat_timeout, renew=lambda info: None,
                              check_pid=options.check_pid)
        return other.reclaim(judge)

    def adopt_from(self, queue_key: str, schedule_key: str, is_mine: Callable[[bytes], bool]) -> int:
        """Move the tasks ``is_mine`` accepts from another queue and schedule into this queue's; how many."""
        moved = 0
        # newest first (huey pushes on the left, takes on the right): the oldest ends at the taking end
        for data in self.conn.lrange(queue_key, 0, -1):
            if is_mine(data):
                moved += int(self._adopt(keys=[queue_key, self.queue_key], args=[data]))
        for data, score in self.conn.zrange(schedule_key, 0, -1, withscores=True):
            if is_mine(data):
                moved += int(self._adopt_delayed(keys=[schedule_key, self.schedule_key], args=[data, score]))
        return moved

    def release(self, holder: str) -> int:
        self.flush_settles(holder)  # settled tasks are not given back
        return int(self._release(keys=[self.leases_key, self.inflight_key(holder), self.queue_key], args=[holder]))

    # ------------------------------------------------------------------ tasks
    def take(self, holder: str, timeout: float) -> Optional[bytes]:
        return self.take_task(holder, timeout)[0]

    def take_task(self, holder: str, timeout: float) -> tuple[Optional[bytes], bool]:
        # one script: this thread's deferred settles and flag clears, the next task if one is ready, and
        # whether huey's result hash is empty; only an empty queue costs a second (blocking) command
        pending = self._mine()
        unsent, clears = pending.settles, pending.clears
        n_settles, n_clears = len(unsent), len(clears)
        keys = [self.queue_key, self.inflight_key(holder)]
        if self._result_key is not None:
            keys.append(self._result_key)
        keys += [self.inflight_key(h) for h, _ in unsent]
        got = self._take(keys=keys, args=[n_settles] + [d for _, d in unsent] + clears)  # raises: none sent
        del unsent[:n_settles]  # only this thread appends to its lists
        del clears[:n_clears]
        if got:
            return got[0], int(got[1]) == 0
        if timeout <= 0:
            return None, False
        return self.conn.blmove(self.queue_key, self.inflight_key(holder), max(0.01, timeout), "RIGHT",
                                "LEFT"), False

    def clear_soon(self, key: str) -> bool:
        if self._result_key is None:
            return False
        self._mine().clears.append(key)
        return True

    def settle(self, holder: str, data: bytes) -> None:
        self.conn.lrem(self.inflight_key(holder), 1, data)

    def _mine(self) -> "_Pending":
        pending = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = _Pending()
            with self._unsent_lock:
                self._pending.append(pending)
        return pending

    def settle_soon(self, holder: str, data: bytes) -> None:
        self._mine().settles.append((holder, data))

    def _send_clears(self, clears: list[str]) -> None:
        n = len(clears)
        if n and self._result_key is not None:
            self.conn.hdel(self._result_key, *clears[:n])
            del clears[:n]

    def flush_thread(self) -> None:
        """Send this thread's unsent settles and flag clears now (its worker is about to idle without
        taking)."""
        pending = getattr(self._local, "pending", None)
        if pending is None:
            return
        unsent = pending.settles
        while unsent:
            h, d = unsent[0]
            self.settle(h, d)
            del unsent[0]
        self._send_clears(pending.clears)

    def flush_settles(self, holder: str) -> None:
        """Send every thread's unsent settles of ``holder`` and every flag clear (its workers ended:
        nothing adds any more)."""
        with self._unsent_lock:
            for pending in self._pending:
                unsent = pending.settles
                for d in [d for h, d in unsent if h == holder]:
                    self.settle(holder, d)
                unsent[:] = [(h, d) for h, d in unsent if h != holder]
                self._send_clears(pending.clears)

    def give_back(self, holder: str, data: bytes) -> None:
        self._give_back(keys=[self.inflight_key(holder), self.queue_key], args=[data])

    def forward(self, holder: str, data: bytes, huey_queue: str) -> None:
        # huey's queue key is "<prefix><name>" ("huey.redis.<name>"): the same prefix with the other name
        other = self.queue_key[: len(self.queue_key) - len(self.storage.name)] + huey_queue
        self._forward(keys=[self.inflight_key(holder), other], args=[data])

    def schedule(self, holder: str, data: bytes, eta: dt.datetime) -> None:
        self._to_schedule(keys=[self.inflight_key(holder), self.schedule_key],
                          args=[data, self.storage.convert_ts(eta)])

    def move_due(self) -> int:
        # huey scores its schedule with convert_ts of its own (naive UTC) timestamps: compare alike
        now = self.storage.convert_ts(self.huey._get_timestamp())
        return int(self._move_due(keys=[self.schedule_key, self.queue_key], args=[now, 1000]))

    def in_flight(self) -> Optional[int]:
        keys = [self.inflight_key(_text(h)) for h in self.conn.hkeys(self.leases_key)]
        if not keys:
            return 0
        pipe = self.conn.pipeline(transaction=False)
        for k in keys:
            pipe.llen(k)
        return sum(int(n) for n in pipe.execute())

    def purge(self) -> int:
        pipe = self.conn.pipeline(transaction=True)
        pipe.llen(self.queue_key)
        pipe.zcard(self.schedule_key)
        pipe.delete(self.queue_key, self.schedule_key)
        ready, delayed, _ = pipe.execute()
        return int(ready) + int(delayed)


class _Pending:
    """One worker thread's writes that go with its next take."""

    __slots__ = ("settles", "clears")

    def __init__(self) -> None:
        self.settles: list[tuple[str, bytes]] = []  # (holder, task data) to remove from in-flight
        self.clears: list[str] = []  # revoke flags huey deletes after a run


class SqliteQueueOps(QueueOps):
    """huey's SQLite storage as it is: a taken task is deleted from its table at once (at-most-once)."""

    def take(self, holder: str, timeout: float) -> Optional[bytes]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            data = self.storage.dequeue()
            if data is not None:
                return bytes(data)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(0.05, left))

    def give_back(self, holder: str, data: bytes) -> None:
        self.storage.enqueue(data)

    def schedule(self, holder: str, data: bytes, eta: dt.datetime) -> None:
        self.storage.add_to_schedule(data, eta)

    def move_due(self) -> int:
        due = self.storage.read_schedule(self.huey._get_timestamp())
        for data in due:
            self.storage.enqueue(data)
        return len(due)

    def purge(self) -> int:
        n = int(self.storage.queue_size()) + int(self.storage.schedule_size())
        self.storage.flush_queue()
        self.storage.flush_schedule()
        return n


def queue_ops_for(huey: Any, storage: str) -> QueueOps:
    return RedisQueueOps(huey) if storage == "redis" else SqliteQueueOps(huey)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def _lease_json(info: LeaseInfo) -> str:
    return json.dumps({"host": info.host, "pid": info.pid, "last_seen": info.last_seen})


def _lease_from_json(holder: str, text: str) -> Optional[LeaseInfo]:
    try:
        d = json.loads(text)
        return LeaseInfo(holder, str(d["host"]), int(d["pid"]), float(d["last_seen"]))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: treated as no lease (dead)

