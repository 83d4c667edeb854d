"""Well-known names. ``broker_kind`` is a plain string: these constants are just the common ones,
and any installed plugin's kind works by its name, case-insensitively."""
from __future__ import annotations


class BrokerEnum:
    """Broker kind names. The values are the original funboost's names; each plugin also answers to a
    short name (``"sqlite"``, ``"memory"``, ``"redis_ack_able"`` …)."""

    EMPTY = "EMPTY"
    SQLITE_QUEUE = "SQLITE_QUEUE"
    PERSISTQUEUE = "SQLITE_QUEUE"
    MEMORY_QUEUE = "MEMORY_QUEUE"
    LOCAL_PYTHON_QUEUE = "MEMORY_QUEUE"
    REDIS = "REDIS"
    REDIS_ACK_ABLE = "REDIS_ACK_ABLE"
    REDIS_STREAM = "REDIS_STREAM"
    REDIS_PRIORITY = "REDIS_PRIORITY"
    REDIS_PUBSUB = "REDIS_PUBSUB"
    RABBITMQ = "RABBITMQ"
    RABBITMQ_PIKA = "RABBITMQ_PIKA"
    KAFKA = "KAFKA"
    CELERY = "CELERY"
    DRAMATIQ = "DRAMATIQ"
    HUEY = "HUEY"
    RQ = "RQ"
    NAMEKO = "NAMEKO"
    GRPC = "GRPC"
    TCP = "TCP"
    HTTP = "HTTP"
    MYSQL_CDC = "MYSQL_CDC"


class ConcurrentModeEnum:
    THREADING = "threading"
    GEVENT = "gevent"
    EVENTLET = "eventlet"
    ASYNC = "async"
    SINGLE_THREAD = "single_thread"
    SOLO = "single_thread"


class FunctionKind:
    COMMON_FUNCTION = "COMMON_FUNCTION"
    STATIC_METHOD = "STATIC_METHOD"
    CLASS_METHOD = "CLASS_METHOD"
    INSTANCE_METHOD = "INSTANCE_METHOD"
