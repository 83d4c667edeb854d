"""What every Redis kind shares: options, the per-process client, key names, the optional publish
linger buffer, and the consumer liveness (heartbeat + reclaim) used by the at-least-once kinds."""
from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from typing import Optional, Sequence

from funboost.engine.liveness import ConsumerLease, LeaseInfo
from funboost.plugins.broker import Broker, OutgoingMessage, new_consumer_id
from funboost.process_local import fork_generation
from funboost.publishing import PipelinedPublisher

from funboost_redis import connection
from funboost_redis.connection import TRANSIENT_ERRORS, Handle, RedisOptions, conn_spec, with_retry

logger = logging.getLogger("funboost.redis")

_uid = itertools.count()
_uid_prefix = uuid.uuid4().hex[:8]


def _new_uid_prefix() -> None:
    global _uid_prefix
    _uid_prefix = uuid.uuid4().hex[:8]


if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's member ids
    os.register_at_fork(after_in_child=_new_uid_prefix)


def delayed_member(body: str, priority: int) -> str:
    """Sorted-set member of a delayed message: 16-char unique id + priority digit + body (unique, so
    two equal bodies never collapse into one member)."""
    return f"{_uid_prefix}{next(_uid) & 0xFFFFFFFF:08x}{priority}{body}"


class RedisBrokerBase(Broker):
    options_model = RedisOptions
    options: RedisOptions

    def __init__(self, queue_name: str, options: Optional[RedisOptions] = None) -> None:
        super().__init__(queue_name, options)
        self._spec = conn_spec(self.options)
        self._gen = -1
        self._handle: Optional[Handle] = None
        self.base = f"{self.options.key_prefix}:{{{queue_name}}}:"
        self.k_delayed = self.base + "delayed"
        self._closed = False
        # linger_ms: the broker-level form of BoosterParams(publish_mode="pipelined"), same machinery
        self._linger: Optional[PipelinedPublisher] = None
        if self.options.linger_ms > 0:
            self._linger = PipelinedPublisher(self._publish_retrying, queue_name, self.options.linger_ms / 1000.0,
                                              self.options.linger_max_batch, retries=0, log=logger)

    @classmethod
    def check_available(cls, options: RedisOptions) -> Optional[str]:
        return connection.check_available(options)

    # ----- client -----
    def _h(self) -> Handle:
        """The process-local handle; re-created in a forked child (sockets must not be shared)."""
        gen = fork_generation()
        if self._gen != gen:
            if self._gen != -1:
                self._after_fork()
            self._handle = connection.get_handle(self._spec)
            self._gen = gen
        return self._handle  # type: ignore[return-value]

    def _after_fork(self) -> None:
        """Hook: the instance was created in a parent process."""

    # ----- publish -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        if self._linger is not None:
            self._linger.publish(messages)
            return
        with_retry(lambda: self._publish_now(messages), self.options.retry_seconds, "publish")

    def _publish_retrying(self, messages: Sequence[OutgoingMessage]) -> None:
        with_retry(lambda: self._publish_now(messages), self.options.retry_seconds, "publish (linger)")

    def _publish_now(self, messages: Sequence[OutgoingMessage]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Send whatever the linger buffer holds (no-op when linger is off)."""
        if self._linger is not None:
            self._linger.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._linger is not None:
            self._linger.close()
        super().close()


class LivenessMixin:
    """Heartbeat + reclaim of dead consumers, for the at-least-once kinds. The subclass provides
    ``_reclaim_script`` (name, source) and ``_reclaim_keys``/``_reclaim_args``."""

    queue_name: str
    options: RedisOptions
    consumer_id: str
    base: str
    _registered: bool = False
    _lease: Optional[ConsumerLease] = None

    def _liveness_init(self) -> None:
        self.k_consumers = self.base + "consumers"
        self.k_lock = self.base + "reclaim_lock"
        self._registered = False
        self._lease = None  # core's lease: renewal and reclaim passes on the process's liveness ticker
        self._lock_token = uuid.uuid4().hex
        self._set_consumer_keys()

    def _set_consumer_keys(self) -> None:
        self.k_hb = self.base + "hb:" + self.consumer_id
        self.k_inflight = self.base + "inflight:" + self.consumer_id
        self.k_landing = self.base + "landing:" + self.consumer_id

    @property
    def hb_ttl_ms(self) -> int:
        return int(self.options.heartbeat_timeout * 1000)

    def _new_identity(self) -> None:
        """In a forked child: a new consumer id (the parent's in-flight work is the parent's)."""
        self.consumer_id = new_consumer_id(self.queue_name)
        self._registered = False
        self._lease = None  # the parent's; the child's consumer registers again on its first fetch
        self._set_consumer_keys()

    def _ensure_registered(self) -> None:
        if not self._registered:
            self._registered = True
            o = self.options
            # the heartbeat key's TTL is the verdict (in the reclaim script); the lease drives the schedule
            self._lease = ConsumerLease(
                self.queue_name, self.consumer_id, heartbeat_interval=o.heartbeat_interval,
                heartbeat_timeout=o.heartbeat_timeout, renew=self._renew_lease, reclaim=self._reclaim,
                reclaim_interval=o.reclaim_interval or o.heartbeat_interval, check_pid=False)
            self._lease.start(renew_now=False)  # the fetch script sets the key itself
            # a restarted consumer picks up the work of dead consumers at once
            try:
                self._reclaim()
            except TRANSIENT_ERRORS:
                pass

    def _renew_lease(self, lease: LeaseInfo) -> None:
        self._beat()

    def _beat(self) -> None:
        self._h().client.set(self.k_hb, b"1", px=self.hb_ttl_ms)  # type: ignore[attr-defined]

    def _reclaim(self, release: bool = False) -> int:
        h = self._h()  # type: ignore[attr-defined]
        name, src = self._reclaim_script  # type: ignore[attr-defined]
        lock_ttl = int((self.options.reclaim_interval or self.options.heartbeat_interval) * 900)
        moved = h.script(name, src)(keys=self._reclaim_keys(),  # type: ignore[attr-defined]
                                    args=self._reclaim_args(lock_ttl, self.consumer_id if release else ""))
        if moved and moved > 0:
            logger.warning("funboost-redis: %s gave back %d in-flight message(s) of %s",
                           self.queue_name, moved, "this closing consumer" if release else "dead consumers")
        return int(moved or 0)

    def _liveness_close(self) -> None:
        """Stop beating and give unacked work back at once (others need not wait for expiry)."""
        if not self._registered:
            return
        if self._lease is not None:
            self._lease.stop()
        self._registered = False
        try:
            self._reclaim(release=True)
        except Exception as exc:
            logger.warning("funboost-redis: releasing in-flight work of %s on close failed (%s); it comes "
                           "back when the heartbeat expires", self.queue_name, exc)


def now() -> float:
    return time.time()
