"""REDIS_PUBSUB: broadcast over a Redis channel. Every consumer subscribed at publish time gets every
message; nothing is stored, so a message published while no consumer listens is gone."""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Optional, Sequence

from funboost.plugins.broker import Capabilities, Delivery, OutgoingMessage, QueueSize

from funboost_redis.base import RedisBrokerBase, logger
from funboost_redis.connection import TRANSIENT_ERRORS, RedisOptions


class RedisPubSubBroker(RedisBrokerBase):
    kind = "redis_pubsub"
    aliases = ("reids_pubsub",)
    capabilities = Capabilities(
        at_least_once=False, persistent=False, native_requeue=True, dead_letter=False, native_delay=False,
        priority=False, ordering="fifo", queue_size="none", in_flight_count=False, purge=False,
        broadcast=True)

    def __init__(self, queue_name: str, options: Optional[RedisOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.channel = self.base + "channel"
        self._ps: Any = None
        self._ps_lock = threading.Lock()
        # requeued deliveries run again in this consumer only (a re-publish would reach everyone)
        self._local: collections.deque[Delivery] = collections.deque()
        self._backoff = 0.05

    def _after_fork(self) -> None:
        self._ps = None

    def _publish_now(self, messages: Sequence[OutgoingMessage]) -> None:
        h = self._h()
        if len(messages) == 1:
            h.command("PUBLISH", self.channel, messages[0].body)
            return
        client = h.client
        pipe = client.pipeline(transaction=False)
        for m in messages:
            pipe.publish(self.channel, m.body)
        pipe.execute()

    def subscribe(self, confirm_timeout: float = 0.0) -> None:
        """Start listening now (fetch does it on first call); messages published before are not seen.
        With ``confirm_timeout`` > 0, wait (up to that long) for the server's confirmation, after which
        every message published is seen."""
        with self._ps_lock:
            if self._ps is None:
                # subscribe confirmations are read (and skipped in fetch), so that one can be waited for
                ps = self._h().client.pubsub()
                ps.subscribe(self.channel)
                self._ps = ps
                if confirm_timeout > 0:
                    self._wait_subscribed(ps, confirm_timeout)

    def _wait_subscribed(self, ps: Any, timeout: float) -> None:
        # the confirmation is the first reply on the fresh connection: no message can come before it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = ps.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is not None and msg.get("type") == "subscribe":
                return
        logger.warning("funboost-redis: no confirmation of the subscription to %s within %ss", self.channel,
                       timeout)

    def run_consumer(self, consumer: Any) -> bool:
        """Subscribe before ``consume()`` returns, so that tasks pushed right after it reach this consumer
        (a channel keeps nothing for a subscriber that is not listening yet); the engine's fetch loop does
        the rest."""
        try:
            self.subscribe(confirm_timeout=self.options.socket_timeout)
        except TRANSIENT_ERRORS as exc:  # fetch resubscribes
            logger.warning("funboost-redis: cannot subscribe to %s yet (%s)", self.channel, exc)
        return False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        out: list[Delivery] = []
        while self._local and len(out) < max_count:
            out.append(self._local.popleft())
        if out:
            return out
        deadline = time.monotonic() + timeout
        try:
            self.subscribe()
            ps = self._ps
            while len(out) < max_count:
                remaining = deadline - time.monotonic() if not out else 0.0
                msg = ps.get_message(timeout=max(0.0, remaining))
                if msg is None:
                    if out or time.monotonic() >= deadline:
                        break
                    continue
                if msg.get("type") == "message":
                    out.append(Delivery(body=msg["data"]))
            self._backoff = 0.05
        except TRANSIENT_ERRORS as exc:
            logger.warning("funboost-redis: pubsub on %s lost its connection (%s); resubscribing",
                           self.queue_name, exc)
            self._drop_ps()
            time.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, 1.0)
        return out

    def _drop_ps(self) -> None:
        with self._ps_lock:
            ps, self._ps = self._ps, None
        if ps is not None:
            try:
                ps.close()
            except Exception:
                pass

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to acknowledge: pub/sub keeps no state."""

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._local.extend(deliveries)

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        # no dead-letter store for a broadcast channel: say so in the log rather than pretend
        for d in deliveries:
            logger.error("funboost-redis: pubsub %s dropped a rejected message (%s): %r", self.queue_name,
                         reason, d.body)

    def queue_size(self) -> QueueSize:
        return QueueSize(ready=None, in_flight=None, delayed=None)

    def purge(self) -> int:
        self._local.clear()
        return -1

    def close(self) -> None:
        self._drop_ps()
        super().close()
