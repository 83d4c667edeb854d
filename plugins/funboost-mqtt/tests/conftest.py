"""Shared helpers: the MQTT broker under test (skip/fail when unreachable) and unique queue names."""
from __future__ import annotations

import uuid

import pytest

from funboost.testing import require_service
from funboost_mqtt import MqttBroker, MqttOptions


@pytest.fixture(scope="session")
def mqtt_options() -> MqttOptions:
    opts = MqttOptions()
    reason = MqttBroker.check_available(opts)
    if reason:
        require_service(reason)
    return opts


@pytest.fixture
def qname() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"
