"""Well-known names. ``broker_kind`` is a plain string: these constants are just the common ones,
and any installed plugin's kind works by its name, case-insensitively."""
from __future__ import annotations

import enum


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
    POSTGRES = "POSTGRES"
    SQLALCHEMY = "SQLALCHEMY"
    SQLACHEMY = "SQLALCHEMY"  # the original's spelling (its kind name is accepted too)
    NATS = "NATS"  # core NATS (funboost-nats: NATS_CORE)
    NATS_CORE = "NATS_CORE"
    NATS_JETSTREAM = "NATS_JETSTREAM"
    MQTT = "MQTT"

    # ---- the rest of the original's names. Variants of a kind that exists here name that kind (the value
    # is what the plugin registers); kinds with no plugin in this project keep their own name, and using
    # them fails with UnknownBrokerKind saying so (funboost.plugins.distributions.KINDS_WITHOUT_PLUGIN).
    RABBITMQ_AMQPSTORM = "RABBITMQ_AMQPSTORM"
    RABBITMQ_RABBITPY = "RABBITMQ"
    RABBITMQ_AMQP = "RABBITMQ"
    RABBITMQ_COMPLEX_ROUTING = "RABBITMQ_COMPLEX_ROUTING"
    REDIS_ACK_USING_TIMEOUT = "REDIS_ACK_USING_TIMEOUT"
    REIDS_ACK_USING_TIMEOUT = "REDIS_ACK_USING_TIMEOUT"  # the original's spelling
    REDIS_BRPOP_LPUSH = "REDIS_BRPOP_LPUSH"
    REDIS_ZSET_PRIORITY = "REDIS_ZSET_PRIORITY"
    REDIS_ZSET_DELAY = "REDIS_ZSET_DELAY"
    FASTEST_MEM_QUEUE = "MEMORY_QUEUE"
    KAFKA_CONFLUENT = "KAFKA"
    CONFLUENT_KAFKA = "KAFKA"
    KAFKA_CONFLUENT_SASlPlAIN = "KAFKA"  # SASL: broker_exclusive_config security_protocol / sasl_*
    MONGOMQ = "MONGOMQ"
    LMDB = "LMDB"
    NSQ = "NSQ"
    ROCKETMQ = "ROCKETMQ"
    ROCKETMQ5 = "ROCKETMQ5"
    ZEROMQ = "ZEROMQ"
    KOMBU = "KOMBU"
    HTTPSQS = "HTTPSQS"
    PULSAR = "PULSAR"
    UDP = "UDP"
    TXT_FILE = "TXT_FILE"
    PEEWEE = "PEEWEE"
    SQS = "SQS"
    WATCHDOG = "WATCHDOG"
    WEBSOCKET = "WEBSOCKET"


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


class RunStatus(str, enum.Enum):
    """How one run of a task ended: ``FunctionResultStatus.run_status`` and the outcome the runner hands
    to the consumer. A str-enum, so records written before it existed (plain strings) compare equal."""

    RUNNING = "running"  # not final yet
    FINISH = "finish"  # ran to the end (success or failure after the last retry); acked
    REQUEUED = "requeued"  # ExceptionForRequeue: republished, will run again
    RETRY_LATER = "retry_later"  # failed attempt republished with a countdown (requeue retry mode)
    DEAD_LETTERED = "dead_lettered"  # moved to <queue>_dlx
    KILLED = "killed"  # remote kill request
    EXPIRED = "expired"  # older than msg_expire_seconds, not run
    FILTERED = "filtered"  # same arguments already ran (task filter), not run

    def __str__(self) -> str:  # "finish", not "RunStatus.FINISH", in logs and JSON
        return self.value

    @property
    def is_final(self) -> bool:
        """False when the task goes on in another message (requeued, retry later)."""
        return self not in _NOT_FINAL  # a set: asked once per task, a tuple's == compares cost ~0.4 us


_NOT_FINAL = frozenset((RunStatus.RUNNING, RunStatus.REQUEUED, RunStatus.RETRY_LATER))
