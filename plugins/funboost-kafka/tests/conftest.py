"""Fixtures: a reachable Kafka-compatible broker (scripts/kafka_service.sh starts Tansu on 19092)."""
from __future__ import annotations

import uuid

import pytest

from funboost.testing import require_available
from funboost_kafka.broker import KafkaBroker
from funboost_kafka.options import KafkaOptions

# Tansu's group join waits about half the session timeout; keep both short in tests.
TEST_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1500}


def make_options(**kw) -> KafkaOptions:
    return KafkaOptions(**{**TEST_OPTIONS, **kw})


@pytest.fixture(scope="session")
def kafka_available() -> None:
    require_available(KafkaBroker, make_options(), "; run scripts/kafka_service.sh")


@pytest.fixture
def queue_name() -> str:
    return f"fbk_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brokers(kafka_available):
    """Factory of brokers closed at the end of the test."""
    made: list[KafkaBroker] = []

    def make(queue: str, **kw) -> KafkaBroker:
        b = KafkaBroker(queue, make_options(**kw))
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def private_kafka(queue_name):
    """``(server, broker)``: a test broker of the test's own (it may be killed and restarted) and a
    KafkaBroker on ``queue_name`` connected to it; both closed at the end of the test."""
    from funboost.testing import require_service
    from funboost.testing.servers import PrivateKafka, ServerUnavailable
    from funboost_kafka.broker import _shared

    try:
        server = PrivateKafka()
    except ServerUnavailable as exc:
        require_service(str(exc))
    server.start()
    broker = KafkaBroker(queue_name, make_options(bootstrap_servers=server.url, publish_timeout=5.0))
    try:
        yield server, broker
    finally:
        broker.close()
        # the shared clients of that server would go on reconnecting to it for the rest of this test process
        # (their retries share kafka-python's network loop with every later test's consumer group)
        _shared.close_connection(broker.options)
        server.cleanup()
