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

kombu's own age-based scan stays as a backstop for entries without a holder tag only (written by a
process that does not use this transport); it never restores a tagged entry.
"""
from __future__ import annotations

import json
import threading
import time
import weakref
from typing import Any, Optional

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from funboost.engine.liveness import ConsumerLease, LeaseInfo
from funboost.plugins.broker import new_consumer_id
from funboost.process_local import ProcessLocalDict
from funboost_celery.options import DEFAULT_HEARTBEAT_TIMEOUT

#: transport option (set by funboost_celery.app) with the holder lease timeout, seconds
HEARTBEAT_TIMEOUT_OPTION = "funboost_heartbeat_timeout"
#: how often a consuming process looks for dead holders, seconds (capped by the heartbeat interval)
RECLAIM_INTERVAL = 1.0


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.funboost_holder = holder_for(self)

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
