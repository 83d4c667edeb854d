"""Which brokers the suite runs on, with the options that point each at a real server on loopback.
A server that is not reachable skips its tests (fails them when FUNBOOST_REQUIRE_SERVICES=1)."""
from __future__ import annotations

import os
from typing import Any, Optional

from funboost.plugins.manager import resolve_broker_kind
from funboost.testing import require_service
from funboost.testing.servers import PrivateKafka, PrivateRabbitmq, PrivateRedis, PrivateServer, ServerUnavailable

REDIS_URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("FUNBOOST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
KAFKA_SERVERS = os.environ.get("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
POSTGRES_DSN = os.environ.get("FUNBOOST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# the SQL broker on the machine's MariaDB (PostgreSQL is the postgres kind's)
SQLALCHEMY_URL = os.environ.get("FUNBOOST_RELIABILITY_SQLALCHEMY_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("FUNBOOST_NATS_URL", "nats://127.0.0.1:4222")

# liveness timings short so that a dead consumer's messages come back within seconds (the defaults are
# tuned for production, not for a test)
FAST_LIVENESS = {"heartbeat_interval": 0.3, "heartbeat_timeout": 1.5, "reclaim_interval": 0.3}
# Kafka's minimum session timeout: a dead member's partitions move to the survivor after it (these are the
# plugin's defaults, spelt out; the broker-restart figure is the one those defaults give)
KAFKA_FAST_SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def broker_options(kind: str, sqlite_dir: str) -> dict[str, Any]:
    """``broker_exclusive_config`` for ``kind`` on the shared server, with :data:`FAST_LIVENESS`."""
    if kind == "sqlite":
        return {"db_dir": sqlite_dir, **FAST_LIVENESS}
    if kind.startswith("redis"):
        return {"url": REDIS_URL, **FAST_LIVENESS}
    if kind == "rabbitmq":
        return {"url": RABBITMQ_URL}
    if kind == "memory":
        return {}
    if kind == "kafka":
        return {"bootstrap_servers": KAFKA_SERVERS, **KAFKA_FAST_SESSION}
    if kind == "celery":
        return {"broker_url": REDIS_URL, "heartbeat_timeout": 2.0, "visibility_timeout": 2.0}
    if kind == "dramatiq":
        return {"broker_url": REDIS_URL, "heartbeat_timeout": 2.0}
    if kind in ("huey", "rq"):
        return {"redis_url": REDIS_URL, **FAST_LIVENESS}
    if kind == "postgres":
        return {"dsn": POSTGRES_DSN, "db_schema": "funboost_reliability", **FAST_LIVENESS}
    if kind == "sqlalchemy":
        return {"url": SQLALCHEMY_URL, "table_prefix": "funboost_rel_", **FAST_LIVENESS}
    if kind == "nats_jetstream":
        # JetStream redelivers a dead consumer's messages after ack_wait (a living consumer's long task is
        # kept by its in-progress signals)
        return {"url": NATS_URL, "ack_wait": 3.0, "stream_prefix": "fbrel_"}
    raise ValueError(f"no reliability options for broker kind {kind!r}")


def start_private_server(kind: str, host: str = "127.0.0.1") -> PrivateServer:
    """A server of the test's own for ``kind`` (redis*, rabbitmq, kafka: funboost.testing.servers, never the
    shared one) listening on ``host``, not started yet. Skips the test (fails it with FUNBOOST_REQUIRE_SERVICES=1)
    where the server's binary is missing. Tests use the ``private_server`` fixture, which also removes it."""
    cls = PrivateRabbitmq if kind == "rabbitmq" else PrivateKafka if kind == "kafka" else PrivateRedis
    try:
        return cls(host=host) if host != "127.0.0.1" else cls()  # PrivateKafka listens on loopback only
    except ServerUnavailable as exc:
        require_service(str(exc))
        raise


def private_server_options(kind: str, server: PrivateServer, **extra: Any) -> dict[str, Any]:
    """``broker_exclusive_config`` for ``kind`` on ``server`` (see :func:`start_private_server`): short liveness
    timings, reconnects at most 1 s apart; ``extra`` added."""
    if kind.startswith("redis"):
        base: dict[str, Any] = {"url": server.url, **FAST_LIVENESS}
    elif kind == "rabbitmq":
        base = {"url": server.url, "reconnect_max_delay": 1.0}
    elif kind == "kafka":
        base = {"bootstrap_servers": server.url, **KAFKA_FAST_SESSION}
    else:
        raise ValueError(f"no private server for broker kind {kind!r}")
    return {**base, **extra}


def unavailable_reason(kind: str, options: dict[str, Any]) -> Optional[str]:
    cls = resolve_broker_kind(kind)
    return cls.check_available(cls.parse_options(options))


def require_broker(kind: str, options: dict[str, Any]) -> None:
    reason = unavailable_reason(kind, options)
    if reason:
        require_service(f"{kind}: {reason}")


def delete_queue(kind: str, queue: str, options: dict[str, Any]) -> None:
    """Remove what a test left on a shared server: the queue, its dead-letter queue, their keys."""
    if kind == "rabbitmq":
        from funboost_rabbitmq.broker import delete_queues
        from funboost_rabbitmq.options import RabbitmqOptions
        opts = RabbitmqOptions(**options)
        delete_queues(opts.resolved_url(), opts.heartbeat, queue)
    elif kind.startswith("redis") or kind in ("celery", "dramatiq", "huey", "rq"):
        import redis
        url = options.get("url") or options.get("broker_url") or options.get("redis_url")
        r = redis.Redis.from_url(url)
        # every key of these kinds carries the queue name, which is unique to the test
        for key in r.scan_iter(f"*{queue}*", count=1000):
            r.delete(key)
        r.close()
    elif kind == "kafka":
        # the topic goes (a purge would refuse while the killed member's session has not expired yet)
        from kafka.admin import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=options["bootstrap_servers"])
        try:
            admin.delete_topics([queue, f"{queue}_dlx"])
        except Exception:  # noqa: BLE001 - the _dlx topic does not exist unless something was dead-lettered
            pass
        finally:
            admin.close()
    # sqlite lives in the test's tmp_path; memory in this process
