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
