"""funboost-mqtt: MQTT brokers for funboost (paho-mqtt 2, MQTT 5).

Kinds: ``mqtt`` (a QoS 1 work queue over a shared subscription, persistent sessions) and
``mqtt_broadcast`` (alias ``mqtt_pubsub``: every consumer gets every message). See docs/brokers/mqtt.md.
"""
from __future__ import annotations

__version__ = "0.1.0"

from funboost_mqtt.broker import MqttBroadcastBroker, MqttBroker  # noqa: E402
from funboost_mqtt.options import MqttOptions  # noqa: E402

ALL_BROKERS = (MqttBroker, MqttBroadcastBroker)


def funboost_register_brokers(registry) -> None:  # type: ignore[no-untyped-def]
    """Register both MQTT kinds (for users who load the module rather than the entry points)."""
    for cls in ALL_BROKERS:
        registry.register(cls)


__all__ = ["MqttBroker", "MqttBroadcastBroker", "MqttOptions", "ALL_BROKERS", "funboost_register_brokers"]
