"""List-based kinds: REDIS (plain, at-most-once), REDIS_ACK_ABLE and REDIS_PRIORITY (at-least-once).

Publishing is one LPUSH of the whole batch per list (no Lua); delayed messages go to a sorted set that
the fetch script promotes when due. The at-least-once kinds move fetched messages atomically (Lua) into
a per-consumer in-flight hash, acked with one HDEL per batch, and given back when that consumer's
heartbeat key expires (see :mod:`funboost_redis.heartbeat`).
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from funboost.plugins.broker import Capabilities, Delivery, OutgoingMessage, QueueSize

from funboost_redis import scripts
from funboost_redis.base import LivenessMixin, RedisBrokerBase, delayed_member, logger
from funboost_redis.connection import TRANSIENT_ERRORS, RedisOptions, encode_prefix, with_retry

_CHUNK = 1000


def _decode_eta(nxt: Any) -> Optional[float]:
    if not nxt:
        return None
    try:
        return float(nxt)
    except (TypeError, ValueError):
        return None


class _ListBroker(RedisBrokerBase):
    nprio = 1

    def __init__(self, queue_name: str, options: Optional[RedisOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.k_ready = self.base + "ready"
        # LPUSH <ready list> encoded once per list: a one-by-one publish only appends the body
        self._lpush = [encode_prefix("LPUSH", self._ready_key(p)) for p in range(self.nprio)]
        self._backoff = 0.05

    def _ready_key(self, prio: int) -> str:
        return self.k_ready if self.nprio <= 1 else f"{self.k_ready}:{prio}"

    def _prio(self, m: OutgoingMessage) -> int:
        if self.nprio <= 1 or m.priority is None:
            return 0
        return min(max(int(m.priority), 0), self.nprio - 1)

    def _publish_now(self, messages: Sequence[OutgoingMessage]) -> None:
        h = self._h()
        if len(messages) == 1:
            m = messages[0]
            if m.eta is None or m.eta <= time.time():
                # the one-by-one fast path: one pre-encoded command, no pipeline
                h.command_with(self._lpush[self._prio(m)], m.body)
                return
        t = time.time()
        client = h.client
        ready: dict[int, list[str]] = {}
        delayed: dict[str, float] = {}
        for m in messages:
            p = self._prio(m)
            if m.eta is not None and m.eta > t:
                delayed[delayed_member(m.body, p)] = m.eta
            else:
                ready.setdefault(p, []).append(m.body)
        pipe = client.pipeline(transaction=False)
        for p, bodies in ready.items():
            key = self._ready_key(p)
            for i in range(0, len(bodies), _CHUNK):
                pipe.lpush(key, *bodies[i:i + _CHUNK])
        if delayed:
            pipe.zadd(self.k_delayed, delayed)
        pipe.execute()

    def _wait_after_error(self, exc: BaseException, what: str) -> None:
        logger.warning("funboost-redis: %s on %s failed (%s: %s); retrying in %.2fs", what,
                       self.queue_name, type(exc).__name__, exc, self._backoff)
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 1.0)

    def _block_budget(self, deadline: float, next_eta: Optional[float]) -> float:
        wait = deadline - time.monotonic()
        if next_eta is not None:
            wait = min(wait, next_eta - time.time())
        # a blocking command must return before the socket times out
        return min(wait, max(0.1, self.options.socket_timeout - 1.0))

    def queue_size(self) -> QueueSize:
        h = self._h()
        ready, in_flight, delayed = h.script("size_list", scripts.SIZE_LIST)(
            keys=[self.base + "consumers", self.k_delayed], args=[self.base, self.nprio])
        return QueueSize(ready=int(ready), in_flight=int(in_flight) if self.capabilities.in_flight_count else None,
                         delayed=int(delayed))

    def purge(self) -> int:
        return int(self._h().script("purge_list", scripts.PURGE_LIST)(
            keys=[self.k_delayed], args=[self.base, self.nprio]))


class RedisBroker(_ListBroker):
    """REDIS: a plain list. Fast; a message is gone from Redis once fetched (at-most-once)."""

    kind = "redis"
    aliases = ("redis_list",)
    capabilities = Capabilities(
        at_least_once=False, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=False, ordering="fifo", queue_size="exact", in_flight_count=False, purge=True, pipelined_publish=True)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        script = self._h().script("fetch_plain", scripts.FETCH_PLAIN)
        while True:
            try:
                res = script(keys=[self.k_delayed], args=[self.base, 1, time.time(), max_count])
                if len(res) > 1:
                    self._backoff = 0.05
                    return [Delivery(body=v) for v in res[1:]]
                wait = self._block_budget(deadline, _decode_eta(res[0]))
                if wait <= 0:
                    return []
                if wait < 0.01:
                    time.sleep(wait)
                    continue
                r = self._h().client.brpop([self.k_ready], timeout=wait)
            except TRANSIENT_ERRORS as exc:
                self._wait_after_error(exc, "fetch")
                return []
            if r:
                return [Delivery(body=r[1])]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: the message left Redis when it was fetched."""

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self.publish([OutgoingMessage(body=d.body) for d in deliveries])


class _ReliableListBroker(LivenessMixin, _ListBroker):
    _reclaim_script = ("reclaim_reliable", scripts.RECLAIM_RELIABLE)

    def __init__(self, queue_name: str, options: Optional[RedisOptions] = None) -> None:
        super().__init__(queue_name, options)
        self._liveness_init()
        self._next_id = 0  # delivery ids of this consumer: ids > _next_id in our hash are orphans
        self._need_recover = False
        self._poll = 0.005

    def _after_fork(self) -> None:
        self._new_identity()
        self._next_id = 0

    def purge(self) -> int:
        """Ready and delayed messages, and what consumers whose heartbeat expired held (it would come back at
        the next reclaim pass and run after the purge); a living consumer's in-flight messages stay."""
        return int(self._h().script("purge_list", scripts.PURGE_LIST)(
            keys=[self.k_delayed, self.k_consumers], args=[self.base, self.nprio]))

    def _reclaim_keys(self) -> list[str]:
        return [self.k_consumers, self.k_lock]

    def _reclaim_args(self, lock_ttl_ms: int, release_cid: str) -> list[Any]:
        return [self.base, self.nprio, self._lock_token, max(1, lock_ttl_ms), release_cid]

    def _recover(self) -> None:
        """A fetch whose reply was lost may have moved messages into our in-flight hash that we never
        received: they have ids above the last one we saw. Give them back."""
        client = self._h().client
        ids = [int(x) for x in client.hkeys(self.k_inflight)]
        orphans = [i for i in ids if i > self._next_id]
        if orphans:
            self._requeue_ids(orphans)
            logger.warning("funboost-redis: %s gave back %d message(s) of a fetch whose reply was lost",
                           self.queue_name, len(orphans))
            self._next_id = max(orphans)
        self._need_recover = False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        try:
            self._h()
            self._ensure_registered()
            if self._need_recover:
                self._recover()
        except TRANSIENT_ERRORS as exc:
            self._wait_after_error(exc, "fetch")
            return []
        script = self._h().script("fetch_reliable", scripts.FETCH_RELIABLE)
        while True:
            try:
                res = script(keys=[self.k_delayed, self.k_inflight, self.k_landing, self.k_hb, self.k_consumers],
                             args=[self.base, self.nprio, time.time(), max_count, self._next_id, self.hb_ttl_ms,
                                   self.consumer_id])
            except TRANSIENT_ERRORS as exc:
                self._need_recover = True
                self._wait_after_error(exc, "fetch")
                return []
            self._next_id = int(res[1])
            if len(res) > 2:
                self._backoff = 0.05
                self._poll = 0.005
                it = iter(res[2:])
                return [Delivery(body=v, tag=i) for i, v in zip(it, it)]
            wait = self._block_budget(deadline, _decode_eta(res[0]))
            if wait <= 0:
                return []
            if self.nprio > 1 or wait < 0.01:
                # several lists cannot be watched by one atomic blocking move: poll, backing off
                time.sleep(min(wait, self._poll))
                self._poll = min(self._poll * 2, 0.05)
                continue
            try:
                # block until a message arrives, moving it into our own landing list (crash-safe);
                # the next script run takes it into the in-flight hash
                self._h().client.blmove(self.k_ready, self.k_landing, wait, "RIGHT", "LEFT")
            except TRANSIENT_ERRORS as exc:
                self._wait_after_error(exc, "fetch")
                return []

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.tag for d in deliveries]
        h = self._h()
        client = h.client

        def run() -> None:
            if len(ids) <= 5000:
                h.command("HDEL", self.k_inflight, *ids)
            else:
                pipe = client.pipeline(transaction=False)
                for i in range(0, len(ids), 5000):
                    pipe.hdel(self.k_inflight, *ids[i:i + 5000])
                pipe.execute()

        with_retry(run, self.options.retry_seconds, "ack")

    def _requeue_ids(self, ids: list[Any]) -> None:
        script = self._h().script("requeue_reliable", scripts.REQUEUE_RELIABLE)
        for i in range(0, len(ids), 5000):
            chunk = ids[i:i + 5000]
            with_retry(lambda: script(keys=[self.k_inflight], args=[self.base, self.nprio, *chunk]),
                       self.options.retry_seconds, "requeue")

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._requeue_ids([d.tag for d in deliveries])

    def close(self) -> None:
        if not self._closed:
            self._liveness_close()
        super().close()


class RedisAckAbleBroker(_ReliableListBroker):
    """REDIS_ACK_ABLE: a list with per-consumer in-flight tracking; at-least-once, survives SIGKILL."""

    kind = "redis_ack_able"
    aliases = ("redis_brpop_lpush", "redisbrpoplpush", "redis_ack_using_timeout", "reids_ack_using_timeout")
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=False, ordering="fifo", queue_size="exact", in_flight_count=True, purge=True, pipelined_publish=True)


class RedisPriorityBroker(_ReliableListBroker):
    """REDIS_PRIORITY: ten lists (priority 0..9, higher first), at-least-once like REDIS_ACK_ABLE."""

    kind = "redis_priority"
    aliases = ("redis_zset_priority",)
    nprio = 10
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=True, ordering="priority", queue_size="exact", in_flight_count=True, purge=True,
        max_priority=9, pipelined_publish=True)
