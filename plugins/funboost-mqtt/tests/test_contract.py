"""The core contract suite on both MQTT kinds."""
from __future__ import annotations

from funboost.testing import BrokerContract


class TestMqttContract(BrokerContract):
    broker_kind = "mqtt"


class TestMqttBroadcastContract(BrokerContract):
    broker_kind = "mqtt_broadcast"
