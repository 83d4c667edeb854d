"""funboost-redis: Redis brokers for funboost.

Kinds: ``redis`` (plain list, at-most-once), ``redis_ack_able`` (list, at-least-once with heartbeat-based
reclaim), ``redis_priority`` (priorities 0..9, at-least-once), ``redis_stream`` (consumer group,
at-least-once), ``redis_pubsub`` (broadcast, not stored). See docs/brokers/redis.md.
"""
from __future__ import annotations

__version__ = "0.1.0"

from funboost_redis.connection import RedisOptions  # noqa: E402
from funboost_redis.lists import RedisAckAbleBroker, RedisBroker, RedisPriorityBroker  # noqa: E402
from funboost_redis.pubsub import RedisPubSubBroker  # noqa: E402
from funboost_redis.stream import RedisStreamBroker  # noqa: E402

ALL_BROKERS = (RedisBroker, RedisAckAbleBroker, RedisPriorityBroker, RedisStreamBroker, RedisPubSubBroker)


def funboost_register_brokers(registry) -> None:  # type: ignore[no-untyped-def]
    """Register every Redis kind (for users who load the module rather than the entry points)."""
    for cls in ALL_BROKERS:
        registry.register(cls)


__all__ = ["RedisOptions", "RedisBroker", "RedisAckAbleBroker", "RedisPriorityBroker", "RedisStreamBroker",
           "RedisPubSubBroker", "ALL_BROKERS", "funboost_register_brokers"]
