"""The distributions this project ships, and what each provides: the one list that error messages
("unknown broker_kind 'kafka' ... pip install funboost-kafka") derive from.

A new distribution of this repository adds one entry here (``core/tests/test_distributions.py`` checks
the list against every ``plugins/*/pyproject.toml``: a listed kind must be one of the distribution's
entry points, and every shipped plugin must be listed). Third-party plugins need no entry: once
installed, they are found through their entry points like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ShippedDistribution:
    #: the distribution's name on PyPI (``pip install <name>``)
    name: str
    #: the kind names it registers (``Broker.kind`` of each class; aliases are read from entry points
    #: once it is installed)
    broker_kinds: tuple[str, ...] = ()
    #: the state backends it provides (``funboost.state`` entry points)
    state_backends: tuple[str, ...] = ()


SHIPPED_DISTRIBUTIONS: tuple[ShippedDistribution, ...] = (
    ShippedDistribution("funboost-sqlite", broker_kinds=("sqlite", "sqlite_queue", "sqlite3", "persistqueue")),
    ShippedDistribution("funboost-redis", broker_kinds=("redis", "redis_ack_able", "redis_priority",
                                                        "redis_stream", "redis_pubsub", "redis_brpop_lpush",
                                                        "redis_ack_using_timeout", "reids_ack_using_timeout",
                                                        "redis_zset_priority"),
                        state_backends=("redis",)),
    ShippedDistribution("funboost-rabbitmq", broker_kinds=("rabbitmq", "rabbitmq_pika", "rabbitmq_amqpstorm",
                                                           "rabbitmq_complex_routing")),
    ShippedDistribution("funboost-kafka", broker_kinds=("kafka",)),
    ShippedDistribution("funboost-celery", broker_kinds=("celery",)),
    ShippedDistribution("funboost-dramatiq", broker_kinds=("dramatiq",)),
    ShippedDistribution("funboost-nameko", broker_kinds=("nameko",)),
    ShippedDistribution("funboost-grpc", broker_kinds=("grpc",)),
    ShippedDistribution("funboost-http", broker_kinds=("http",)),
    ShippedDistribution("funboost-postgres", broker_kinds=("postgres", "postgresql", "postgres_queue")),
    ShippedDistribution("funboost-sqlalchemy", broker_kinds=("sqlalchemy", "sqlachemy")),
    ShippedDistribution("funboost-nats", broker_kinds=("nats_jetstream", "jetstream", "nats_js", "nats_core",
                                                       "nats")),
    ShippedDistribution("funboost-mqtt", broker_kinds=("mqtt", "mqtt_broadcast", "mqtt_pubsub")),
    ShippedDistribution("funboost-otel"),  # OpenTelemetry tracing on the funboost.plugins hooks: no kind
    ShippedDistribution("funboost-tcp", broker_kinds=("tcp",)),
    ShippedDistribution("funboost-mysql-cdc", broker_kinds=("mysql_cdc",)),
    ShippedDistribution("funboost-huey", broker_kinds=("huey",)),
    ShippedDistribution("funboost-rq", broker_kinds=("rq",)),
    ShippedDistribution("funboost-web"),  # the web manager (`funboost web`): no kind
)


#: kinds of the original funboost that no distribution of this project provides, and what to use instead
#: (named in the unknown-kind error, so nobody searches PyPI for a plugin that does not exist)
KINDS_WITHOUT_PLUGIN: dict[str, str] = {
    "redis_zset_delay": "delays (countdown / eta) work on every kind; use REDIS_ACK_ABLE",
    "mongomq": "use POSTGRES, SQLALCHEMY or REDIS_ACK_ABLE",
    "lmdb": "use SQLITE_QUEUE for a local persistent queue",
    "peewee": "use SQLALCHEMY",
    "txt_file": "use SQLITE_QUEUE for a local persistent queue",
    "nsq": "", "rocketmq": "", "rocketmq5": "", "zeromq": "use TCP", "kombu": "use RABBITMQ or REDIS_ACK_ABLE",
    "httpsqs": "use HTTP", "pulsar": "", "udp": "use TCP", "sqs": "", "watchdog": "", "websocket": "use HTTP",
}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def distribution_for_broker_kind(kind: str) -> Optional[str]:
    """The shipped distribution that provides broker kind ``kind``, or None."""
    key = _normalize(kind)
    for dist in SHIPPED_DISTRIBUTIONS:
        if key in dist.broker_kinds:
            return dist.name
    return None


def distribution_for_state_backend(name: str) -> Optional[str]:
    """The shipped distribution that provides state backend ``name``, or None."""
    key = _normalize(name)
    for dist in SHIPPED_DISTRIBUTIONS:
        if key in dist.state_backends:
            return dist.name
    return None
