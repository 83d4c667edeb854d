"""The core contract suite on every Redis kind."""
from __future__ import annotations

from funboost.testing import BrokerContract

FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}


class TestRedisContract(BrokerContract):
    broker_kind = "redis"


class TestRedisAckAbleContract(BrokerContract):
    broker_kind = "redis_ack_able"
    fast_reclaim_options = FAST
    redelivery_timeout = 10.0


class TestRedisPriorityContract(BrokerContract):
    broker_kind = "redis_priority"
    fast_reclaim_options = FAST
    redelivery_timeout = 10.0


class TestRedisStreamContract(BrokerContract):
    broker_kind = "redis_stream"
    fast_reclaim_options = FAST
    redelivery_timeout = 10.0


class TestRedisPubSubContract(BrokerContract):
    broker_kind = "redis_pubsub"
