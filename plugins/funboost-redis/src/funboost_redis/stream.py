"""REDIS_STREAM: a Redis stream with one consumer group (``funboost``) per queue.

Messages are read with XREADGROUP, acked with XACK + XDEL (so the stream only holds unfinished work),
and the pending entries of a consumer whose heartbeat expired are re-added for the live consumers.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import redis

from funboost.plugins.broker import Capabilities, Delivery, OutgoingMessage, QueueSize

from funboost_redis import scripts
from funboost_redis.base import LivenessMixin, RedisBrokerBase, delayed_member, logger
from funboost_redis.connection import TRANSIENT_ERRORS, RedisOptions, encode_prefix, with_retry

GROUP = "funboost"


class RedisStreamBroker(LivenessMixin, RedisBrokerBase):
    kind = "redis_stream"
    aliases = ()
    capabilities = Capabilities(
        at_least_once=True, persistent=True, native_requeue=True, dead_letter=True, native_delay=True,
        priority=False, ordering="fifo", queue_size="exact", in_flight_count=True, purge=True, pipelined_publish=True)
    _reclaim_script = ("reclaim_stream", scripts.RECLAIM_STREAM)

    def __init__(self, queue_name: str, options: Optional[RedisOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.k_stream = self.base + "stream"
        self._xadd = encode_prefix("XADD", self.k_stream, "*", "b")
        self._liveness_init()
        self._group_ok = False
        self._backoff = 0.05
        self._need_recover = False
        self._outstanding: set[Any] = set()  # ids handed out and not yet acked/requeued

    def _after_fork(self) -> None:
        self._new_identity()
        self._outstanding = set()

    def _reclaim_keys(self) -> list[str]:
        return [self.k_consumers, self.k_lock, self.k_stream]

    def _reclaim_args(self, lock_ttl_ms: int, release_cid: str) -> list[Any]:
        return [self.base, GROUP, self._lock_token, max(1, lock_ttl_ms), release_cid]

    def _ensure_group(self) -> None:
        try:
            self._h().client.xgroup_create(self.k_stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ok = True

    def _publish_now(self, messages: Sequence[OutgoingMessage]) -> None:
        h = self._h()
        t = time.time()
        if len(messages) == 1 and (messages[0].eta is None or messages[0].eta <= t):
            h.command_with(self._xadd, messages[0].body)
            return
        client = h.client
        pipe = client.pipeline(transaction=False)
        delayed: dict[str, float] = {}
        for m in messages:
            if m.eta is not None and m.eta > t:
                delayed[delayed_member(m.body, 0)] = m.eta
            else:
                pipe.xadd(self.k_stream, {"b": m.body})
        if delayed:
            pipe.zadd(self.k_delayed, delayed)
        pipe.execute()

    def _wait_after_error(self, exc: BaseException) -> None:
        logger.warning("funboost-redis: fetch on %s failed (%s: %s); retrying in %.2fs", self.queue_name,
                       type(exc).__name__, exc, self._backoff)
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 1.0)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        try:
            if not self._group_ok:
                self._ensure_group()
            self._ensure_registered()
            if self._need_recover:
                self._recover()
            script = self._h().script("fetch_stream", scripts.FETCH_STREAM)
            while True:
                try:
                    res = script(keys=[self.k_delayed, self.k_stream, self.k_hb, self.k_consumers],
                                 args=[self.base, 1, time.time(), max_count, GROUP, self.consumer_id,
                                       self.hb_ttl_ms])
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    self._ensure_group()  # the stream was deleted (purge of everything, or a restart)
                    continue
                if len(res) > 1:
                    self._backoff = 0.05
                    it = iter(res[1:])
                    out = [Delivery(body=v, tag=i) for i, v in zip(it, it)]
                    self._outstanding.update(d.tag for d in out)
                    return out
                wait = deadline - time.monotonic()
                nxt = res[0]
                if nxt:
                    wait = min(wait, float(nxt) - time.time())
                wait = min(wait, max(0.1, self.options.socket_timeout - 1.0))
                if wait <= 0:
                    return []
                if wait < 0.01:
                    time.sleep(wait)
                    continue
                # block until something arrives (only the script path promotes delayed entries, hence
                # the wait is bounded by the next eta above)
                r = self._h().client.xreadgroup(GROUP, self.consumer_id, {self.k_stream: ">"},
                                                count=max_count, block=max(1, int(wait * 1000)))
                if r:
                    self._backoff = 0.05
                    out = [Delivery(body=fields.get(b"b", b""), tag=eid) for eid, fields in r[0][1]]
                    self._outstanding.update(d.tag for d in out)
                    return out
        except TRANSIENT_ERRORS as exc:
            self._need_recover = True
            self._wait_after_error(exc)
            return []

    def _recover(self) -> None:
        """A read whose reply was lost leaves entries pending for this (live) consumer that it never
        received: give back every pending entry of ours that we did not hand out."""
        client = self._h().client
        mine = client.xpending_range(self.k_stream, GROUP, min="-", max="+", count=100000,
                                     consumername=self.consumer_id)
        unseen = [e["message_id"] for e in mine if e["message_id"] not in self._outstanding]
        if unseen:
            self._h().script("requeue_stream", scripts.REQUEUE_STREAM)(keys=[self.k_stream], args=[GROUP, *unseen])
            logger.warning("funboost-redis: %s gave back %d entries of a read whose reply was lost",
                           self.queue_name, len(unseen))
        self._need_recover = False

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.tag for d in deliveries]
        script = self._h().script("ack_stream", scripts.ACK_STREAM)
        with_retry(lambda: script(keys=[self.k_stream], args=[GROUP, *ids]), self.options.retry_seconds, "ack")
        self._outstanding.difference_update(ids)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.tag for d in deliveries]
        script = self._h().script("requeue_stream", scripts.REQUEUE_STREAM)
        with_retry(lambda: script(keys=[self.k_stream], args=[GROUP, *ids]), self.options.retry_seconds,
                   "requeue")
        self._outstanding.difference_update(ids)

    def queue_size(self) -> QueueSize:
        ready, pending, delayed = self._h().script("size_stream", scripts.SIZE_STREAM)(
            keys=[self.k_stream, self.k_delayed], args=[GROUP])
        return QueueSize(ready=int(ready), in_flight=int(pending), delayed=int(delayed))

    def purge(self) -> int:
        return int(self._h().script("purge_stream", scripts.PURGE_STREAM)(
            keys=[self.k_stream, self.k_delayed, self.k_consumers], args=[GROUP, self.base]))

    def close(self) -> None:
        if not self._closed:
            self._liveness_close()
        super().close()
