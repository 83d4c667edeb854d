"""Holder leases on the Redis transport: a dead worker's messages come back within seconds of its death, a
living worker's long task never does.

kombu's Redis transport moves a message it hands out into the ``unacked`` hash and scores it in the
``unacked_index`` sorted set with the time it was handed out; any consumer puts messages older than
``visibility_timeout`` back (``QoS.restore_visible``). Alone that forces a choice: a long timeout
(Celery's hour) strands a SIGKILLed worker's tasks, a short one hands a living worker's long task to a
second worker (celery#2599).

Here each process that takes messages is a *holder* with a lease (:class:`funboost.engine.liveness.
ConsumerLease`): host, pid and last renewal in the hash ``<unacked>_holders``, renewed from the process's
liveness ticker every ``heartbeat_timeout / 5`` seconds, whatever its tasks do. The transport used by the
plugin (:class:`FunboostRedisTransport`) tags every unacked entry with its holder in the same
``MULTI`` that records it (hash ``<unacked>_holder``: delivery tag -> holder id), after the holder's
lease was written. Every process that consumes runs a reclaim pass every second: the entries of a holder
that is dead (its process is gone on this host: at once after ``kill -9``; or its lease is older than
``heartbeat_timeout``: other hosts) go back to their queue, each in a transaction that checks the entry
is still that holder's. A living holder's entries are never touched, however long their tasks run.
A message taken back gets a new delivery tag (:func:`retag`): a holder judged dead that was only stalled
and resumes acks its old tag, which no longer names anything, never the entry of the message's new holder.

Taking a message and recording it as held is one server-side step (:data:`POP_AND_HOLD`, a Lua script
run where kombu would send ``BRPOP``): with kombu's ``BRPOP`` the message leaves its list first and is
recorded by the client afterwards, and a worker killed in between (or while the popped reply waits in its
socket for prefetch credit) loses it: no list, no unacked entry. Since Redis has no blocking multi-list
pop that keeps the message, an idle channel waits with ``BLMOVE list list RIGHT RIGHT`` (a move onto itself, so the message never
leaves) on the list its last message came from (at first: the lowest priority level, where funboost's
messages without a priority go): it wakes as soon as that list has a message; with several lists
(priority levels, several queues) it looks at all of them again every :data:`IDLE_RECHECK` seconds.

kombu's own age-based scan stays as a backstop for entries without a holder tag only (written by a
process that does not use this transport); it never restores a tagged entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import weakref
from queue import Empty
from time import monotonic
from typing import Any, Optional

import redis

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from funboost.engine.liveness import ConsumerLease, LeaseInfo
from funboost.plugins.broker import new_consumer_id
from funboost.process_local import ProcessLocalDict
from funboost_celery.options import DEFAULT_HEARTBEAT_TIMEOUT

log = logging.getLogger("funboost.celery")

#: transport option (set by funboost_celery.app) with the holder lease timeout, seconds
HEARTBEAT_TIMEOUT_OPTION = "funboost_heartbeat_timeout"
#: how often a consuming process looks for dead holders, seconds (capped by the heartbeat interval)
RECLAIM_INTERVAL = 1.0
#: an idle channel with several lists looks at all of them again after this many seconds (it wakes at
#: once for the list its last message came from)
IDLE_RECHECK = 0.1

#: Take the first message of the first non-empty list and record it as held, in one step.
#: KEYS: unacked hash, unacked index, holder-of hash, then the lists in the order to look at them.
#: ARGV: time handed out (the index score kombu's own scan compares), holder id.
#: Returns {position of the list among the lists (1-based), message, delivery tag or false}; nil when
#: every list is empty. A message without a readable delivery tag is handed out unrecorded (kombu's
#: client-side recording then applies, as before).
POP_AND_HOLD = """
for i = 4, #KEYS do
    local item = redis.call('RPOP', KEYS[i])
    if item then
        local ok, msg = pcall(cjson.decode, item)
        local props = ok and type(msg) == 'table' and msg['properties']
        local tag = type(props) == 'table' and props['delivery_tag']
        local info = type(props) == 'table' and props['delivery_info']
        if type(tag) == 'string' and type(info) == 'table' then
            redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
                       .. cjson.encode(info['routing_key']) .. ']')
            redis.call('ZADD', KEYS[2], ARGV[1], tag)
            redis.call('HSET', KEYS[3], tag, ARGV[2])
            return {i - 3, item, tag}
        end
        return {i - 3, item, false}
    end
end
return false
"""
POP_AND_HOLD_SHA = hashlib.sha1(POP_AND_HOLD.encode()).hexdigest()


def _text(v: Any) -> Optional[str]:
    return v.decode() if isinstance(v, bytes) else v


class HolderKeys:
    """Key names of one kombu Redis channel (derived from its ``unacked_key``). kombu prefixes
    ``global_keyprefix`` itself for the commands it knows; :attr:`raw_*` are for the others."""

    def __init__(self, chan: Any) -> None:
        self.unacked = chan.unacked_key
        self.index = chan.unacked_index_key
        self.holder_of = f"{chan.unacked_key}_holder"  # delivery tag -> holder id
        self.leases = f"{chan.unacked_key}_holders"  # holder id -> [host, pid, last_seen]
        prefix = getattr(chan, "global_keyprefix", "") or ""
        self.raw_holder_of = prefix + self.holder_of
        self.raw_leases = prefix + self.leases
        self.raw_index = prefix + self.index
        self.raw_unacked = prefix + self.unacked


class ProcessHolder:
    """This process's holder identity on one Redis database: its lease and the reclaim pass.

    Started by the first channel that consumes or pulls (:meth:`attach`), stopped when the last such
    channel closes (its lease is then left to expire: a message still held stays safe until then). Runs
    on the ticker with the client of any attached channel (redis-py clients are thread-safe)."""

    def __init__(self, heartbeat_timeout: float) -> None:
        interval = heartbeat_timeout / 5
        self.lease = ConsumerLease("funboost-celery", new_consumer_id("celery"), heartbeat_interval=interval,
                                   heartbeat_timeout=heartbeat_timeout, renew=self._write_lease,
                                   reclaim=self.reclaim, reclaim_interval=min(RECLAIM_INTERVAL, interval))
        self._channels: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ channels
    def attach(self, chan: Any) -> None:
        with self._lock:
            self._channels.add(chan)
            if not self.lease.running:
                self.lease.start()  # writes the lease now: before any entry is tagged with its id

    def detach(self, chan: Any) -> None:
        with self._lock:
            self._channels.discard(chan)
            if not self._channels:
                self.lease.stop()

    def _channel(self) -> Any:
        for chan in list(self._channels):
            if not getattr(chan, "closed", False):
                return chan
        raise RuntimeError("no open channel")

    def holder_id(self, chan: Any) -> str:
        """The id to tag an entry with now; renews the lease inline first when it is due (a holder whose
        lease was judged dead and dropped writes it again before it tags anything new)."""
        if not self.lease.running:
            self.attach(chan)
        elif self.lease.renew_due():
            self.lease.renew()
        return self.lease.consumer_id

    # ------------------------------------------------------------------ ticker callbacks
    def _write_lease(self, info: LeaseInfo) -> None:
        chan = self._channel()
        keys = HolderKeys(chan)
        with chan.conn_or_acquire() as client:
            client.hset(keys.leases, info.consumer_id, json.dumps([info.host, info.pid, info.last_seen]))

    def reclaim(self) -> int:
        """Put back the unacked entries of dead holders; drop the leases of dead holders that hold
        nothing. Returns how many messages went back."""
        return reclaim_dead_holders(self._channel(), self.lease)


def _parse_leases(raw: dict) -> dict[str, LeaseInfo]:
    out: dict[str, LeaseInfo] = {}
    for k, v in raw.items():
        holder = _text(k)
        try:
            host, pid, last_seen = json.loads(_text(v))
            out[holder] = LeaseInfo(holder, str(host), int(pid), float(last_seen))
        except (ValueError, TypeError):
            pass  # unreadable: treated as no lease, i.e. dead
    return out


def reclaim_dead_holders(chan: Any, lease: ConsumerLease) -> int:
    keys = HolderKeys(chan)
    with chan.conn_or_acquire() as client:
        tagged = {_text(t): _text(h) for t, h in client.hgetall(keys.raw_holder_of).items()}
        leases = _parse_leases(client.hgetall(keys.raw_leases))
        holders = set(tagged.values())
        dead = set(lease.dead_holders(holders, leases))
        restored = 0
        for tag, holder in tagged.items():
            if holder in dead:
                restored += restore_if_held(chan, client, keys, tag, holder)
        # leases of dead holders that held nothing: dropped if still dead under WATCH (a holder judged
        # dead by expiry that comes back renews its lease before it tags anything new)
        for holder in lease.dead_holders(set(leases) - holders, leases):
            _drop_lease_if_dead(client, keys, lease, holder)
    return restored


def restore_if_held(chan: Any, client: Any, keys: HolderKeys, tag: str, holder: Optional[str]) -> int:
    """Put one unacked message back into its queue if it is still held by ``holder`` (``None``: still
    untagged), atomically (``WATCH`` on the unacked and holder hashes): a message acked, restored or
    handed to another holder meanwhile is left alone. 1 if it went back."""
    done = []

    def txn(pipe: Any) -> None:
        done.clear()
        if _text(pipe.hget(keys.holder_of, tag)) != holder:
            return
        raw = pipe.hget(keys.unacked, tag)
        pipe.multi()
        pipe.zrem(keys.index, tag)
        pipe.hdel(keys.unacked, tag)
        pipe.hdel(keys.holder_of, tag)
        if raw:
            payload, exchange, routing_key = loads(_text(raw))
            retag(chan, payload)
            chan._do_restore_message(payload, exchange, routing_key, pipe, False)
            done.append(1)

    client.transaction(txn, keys.unacked, keys.holder_of)
    return len(done)


def retag(chan: Any, payload: Any) -> None:
    """Give a message taken back from a holder a new delivery tag before it goes back to its queue.

    kombu keys the unacked entry by the tag written at publish time, and a restored message keeps it, so
    the next delivery of that message would share the key with the one taken back. A holder that was
    only stalled (SIGSTOP, a long GC pause, a VM migration) and resumes still acks or rejects by the old
    tag: it must settle nothing but its own, expired delivery, not the entry of the worker that has the
    message now (which would be lost if that worker died). With a new tag the stale ack finds no entry."""
    props = payload.get("properties") if isinstance(payload, dict) else None
    if isinstance(props, dict):
        props["delivery_tag"] = chan._next_delivery_tag()


def _drop_lease_if_dead(client: Any, keys: HolderKeys, lease: ConsumerLease, holder: str) -> None:
    def txn(pipe: Any) -> None:
        current = _parse_leases({holder: pipe.hget(keys.leases, holder) or b"null"}).get(holder)
        pipe.multi()
        if current is not None and lease.is_dead(current):  # judged again on the value under WATCH
            pipe.hdel(keys.leases, holder)

    client.transaction(txn, keys.leases)


# ===================================================================================== kombu subclasses
_holders: ProcessLocalDict[tuple, ProcessHolder] = ProcessLocalDict()  # a forked child gets its own


def holder_for(chan: Any) -> ProcessHolder:
    """This process's holder for the Redis database (and keys) of ``chan``."""
    client = chan.connection.client
    timeout = float(client.transport_options.get(HEARTBEAT_TIMEOUT_OPTION, DEFAULT_HEARTBEAT_TIMEOUT))
    key = (client.as_uri(include_password=True), chan.unacked_key, getattr(chan, "global_keyprefix", ""), timeout)
    return _holders.get_or_create(key, lambda: ProcessHolder(timeout))


class HolderQoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, with each unacked entry tagged by its holder."""

    def append(self, message: Any, delivery_tag: str) -> None:
        held = self.channel.funboost_held_tags
        if delivery_tag in held:  # POP_AND_HOLD recorded it when it took the message
            held.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        # the same entries kombu writes (index score = time handed out; [raw, exchange, routing key]),
        # plus the holder tag, in one MULTI: an entry is never visible without its holder
        holder = self.channel.funboost_holder.holder_id(self.channel)
        info = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, dumps([message._raw, info["exchange"], info["routing_key"]]))
            pipe.hset(f"{self.unacked_key}_holder", delivery_tag, holder)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # ack, reject and restore by the holder itself (kombu's own calls) drop the tag too
        return super()._remove_from_indices(delivery_tag, pipe).hdel(f"{self.unacked_key}_holder", delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """kombu's age-based scan, as a backstop for *untagged* entries only: a tagged entry goes back
        when its holder is dead (:func:`reclaim_dead_holders`), never because of its age."""
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        keys = HolderKeys(self.channel)
        with self.channel.conn_or_acquire() as client:
            ceiling = time.time() - self.visibility_timeout
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    old = client.zrange(self.unacked_index_key, ceiling, 0, desc=True, byscore=True,
                                        offset=num and start, num=num)
                    tags = [_text(t) for t in old or []]
                    owners = client.hmget(keys.raw_holder_of, tags) if tags else []
                    for tag, owner in zip(tags, owners):
                        if owner is None:
                            restore_if_held(self.channel, client, keys, tag, None)
            except kombu_redis.MutexHeld:
                pass


class _HolderChannelMixin:
    """A kombu Redis channel that belongs to this process's holder while it consumes or pulls."""

    QoS = HolderQoS
    funboost_holder: ProcessHolder
    #: delivery tags POP_AND_HOLD recorded as held, until the QoS sees the message (append)
    funboost_held_tags: set[str]
    _pop_pending: Optional[tuple[str, list[tuple[str, str]]]] = None  # ("pop" | "wait", [(list, queue)])
    _pop_idle = False  # the last pop found every list empty: wait before the next
    _pop_wait_list: Optional[str] = None  # the list the last message came from: where an idle wait blocks
    _pop_script_cached = False  # the server knows POP_AND_HOLD (EVALSHA), else it is sent whole (EVAL)
    _atomic_pop: Optional[bool] = None  # the server has BLMOVE (Redis >= 6.2); decided on first use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.funboost_holder = holder_for(self)
        self.funboost_held_tags = set()

    # ------------------------------------------------------------------ taking messages (POP_AND_HOLD)
    def _atomic_pop_supported(self) -> bool:
        if self._atomic_pop is None:
            try:
                with self.conn_or_acquire() as client:  # type: ignore[attr-defined]
                    version = str(client.info("server").get("redis_version", "0"))
            except redis.exceptions.ResponseError:  # INFO refused (some managed servers): kombu's BRPOP
                version = "0"
            parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
            self._atomic_pop = parts >= (6, 2)
            if not self._atomic_pop:
                log.warning("Redis %s has no BLMOVE (6.2+) or refused INFO: messages are taken with kombu's "
                            "BRPOP, which loses a message if the worker dies right after taking it", version)
        return self._atomic_pop

    def _lists(self, queues: list[str]) -> list[tuple[str, str]]:
        """(list key, queue) in kombu's order: every queue's highest priority level first."""
        chan: Any = self
        return [(chan._q_for_pri(q, pri), q) for pri in chan.priority_steps for q in queues]

    def _pop_command(self, lists: list[tuple[str, str]]) -> list[Any]:
        chan: Any = self
        keys = HolderKeys(self)
        prefix = getattr(chan, "global_keyprefix", "") or ""
        holder = self.funboost_holder.holder_id(self)  # writes the lease first if it is not there yet
        head = ["EVALSHA", POP_AND_HOLD_SHA] if self._pop_script_cached else ["EVAL", POP_AND_HOLD]
        return [*head, 3 + len(lists), keys.raw_unacked, keys.raw_index, keys.raw_holder_of,
                *(prefix + key for key, _ in lists), repr(time.time()), holder]

    def _brpop_start(self, timeout: Optional[float] = None) -> None:
        chan: Any = self
        if not self._atomic_pop_supported():
            return super()._brpop_start(timeout)  # type: ignore[misc,no-any-return]
        queues = chan._queue_cycle.consume(len(chan.active_queues))
        if not queues:
            return None
        lists = self._lists(queues)
        if self._pop_idle:
            wait = chan.brpop_timeout if timeout is None else timeout
            if len(lists) > 1:
                wait = min(wait or IDLE_RECHECK, IDLE_RECHECK)
            keys = [key for key, _ in lists]
            watched = self._pop_wait_list
            if watched not in keys:
                # funboost publishes a message without a priority to the lowest level (kombu serves its
                # level 0 first); once a message came from another list, the wait follows it there
                watched = chan._q_for_pri(queues[0], chan.priority_steps[-1])
                watched = watched if watched in keys else keys[0]
            watched = (getattr(chan, "global_keyprefix", "") or "") + watched
            command: list[Any] = ["BLMOVE", watched, watched, "RIGHT", "RIGHT", wait or 0]
            self._pop_pending = ("wait", lists)
        else:
            command = self._pop_command(lists)
            self._pop_pending = ("pop", lists)
        chan._in_poll = chan.client.connection
        chan._brpop_sent_at = monotonic()
        chan.client.connection.send_command(*command)
        return None

    def _brpop_read(self, **options: Any) -> Any:
        chan: Any = self
        pending, self._pop_pending = self._pop_pending, None
        if pending is None:  # kombu's own BRPOP (a server without BLMOVE)
            return super()._brpop_read(**options)  # type: ignore[misc]
        what, lists = pending
        try:
            try:
                reply = chan.client.parse_response(chan.client.connection, "BLMOVE" if what == "wait" else "EVAL",
                                                   **options)
            except chan.connection_errors:
                chan.client.connection.disconnect()  # the next round reconnects
                raise
            except redis.exceptions.NoScriptError:  # the server lost its script cache (a restart)
                self._pop_script_cached = False
                raise Empty() from None
            if what == "wait":  # a message arrived on the first list, or it is time to look at all again
                self._pop_idle = False
                raise Empty()
            self._pop_script_cached = True
            if not reply:
                self._pop_idle = True
                raise Empty()
            position, item, tag = reply
            if tag:
                self.funboost_held_tags.add(str(_text(tag)))
            self._pop_wait_list, queue = lists[int(position) - 1]
            chan._queue_cycle.rotate(queue)
            chan.connection._deliver(loads(_text(item)), queue)
            return True
        finally:
            chan._in_poll = None
            flush = getattr(chan, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush is not None:
                flush()

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        """kombu sends ``EXISTS`` without ``global_keyprefix`` (it is not among its prefixed commands): with
        a prefix, a passive declare never found the queue and its size read 0."""
        chan: Any = self
        prefix = getattr(chan, "global_keyprefix", "") or ""
        with chan.conn_or_acquire() as client:
            if "EXISTS" in getattr(client, "PREFIXED_SIMPLE_COMMANDS", ()):  # a kombu that prefixes it
                prefix = ""
            with client.pipeline() as pipe:
                for pri in chan.priority_steps:
                    pipe.exists(prefix + chan._q_for_pri(queue, pri))
                return any(pipe.execute())

    def _get(self, queue: str, timeout: Optional[float] = None) -> Any:
        """basic_get (funboost's pull path): one POP_AND_HOLD, sent whole (EVAL is never key-prefixed
        by kombu's client, so the keys are prefixed here)."""
        chan: Any = self
        if not self._atomic_pop_supported():
            return super()._get(queue)  # type: ignore[misc]
        lists = self._lists([queue])
        command = self._pop_command(lists)
        command[:2] = ["EVAL", POP_AND_HOLD]
        with chan.conn_or_acquire() as client:
            reply = client.execute_command(*command)
            refresh = getattr(chan, "_maybe_update_queues_expire", None)  # kombu >= 5.3 (x-expires)
            if refresh is not None:
                refresh(client, queue)
        if not reply:
            raise Empty()
        _, item, tag = reply
        if tag:
            self.funboost_held_tags.add(str(_text(tag)))
        return loads(_text(item))

    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        self.funboost_holder.attach(self)  # also starts the reclaim pass of this consuming process
        return super().basic_consume(*args, **kwargs)  # type: ignore[misc]

    def basic_get(self, *args: Any, **kwargs: Any) -> Any:
        self.funboost_holder.attach(self)
        return super().basic_get(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]  # gives back what this channel holds (kombu restores it)
        finally:
            self.funboost_holder.detach(self)


class HolderChannel(_HolderChannelMixin, kombu_redis.Channel):
    pass


class HolderSentinelChannel(_HolderChannelMixin, kombu_redis.SentinelChannel):
    pass


class FunboostRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with holder leases (``redis://``, ``rediss://``)."""

    Channel = HolderChannel


class FunboostSentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Redis Sentinel transport with holder leases (``sentinel://``)."""

    Channel = HolderSentinelChannel


def transport_for(scheme: str) -> Optional[str]:
    """The ``broker_transport`` for a broker URL scheme (None: kombu's own, without holder leases)."""
    if scheme in ("redis", "rediss"):
        return f"{__name__}:FunboostRedisTransport"
    if scheme == "sentinel":
        return f"{__name__}:FunboostSentinelTransport"
    return None
