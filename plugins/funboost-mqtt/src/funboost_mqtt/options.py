"""``broker_exclusive_config`` of the MQTT kinds. Connection settings default to the environment
(``FUNBOOST_MQTT_HOST``, ``FUNBOOST_MQTT_PORT``, ``FUNBOOST_MQTT_USERNAME``, ``FUNBOOST_MQTT_PASSWORD``)
and then to a broker on loopback."""
from __future__ import annotations

import os
import re
from typing import Optional

from pydantic import Field, field_validator

from funboost.plugins.broker import BrokerOptions


class MqttOptions(BrokerOptions):
    host: str = Field(default_factory=lambda: os.environ.get("FUNBOOST_MQTT_HOST", "127.0.0.1"))
    port: int = Field(default_factory=lambda: int(os.environ.get("FUNBOOST_MQTT_PORT", "1883")), gt=0, lt=65536)
    username: Optional[str] = Field(default_factory=lambda: os.environ.get("FUNBOOST_MQTT_USERNAME") or None)
    password: Optional[str] = Field(default_factory=lambda: os.environ.get("FUNBOOST_MQTT_PASSWORD") or None)
    keepalive: int = Field(30, ge=5)
    connect_timeout: float = Field(5.0, gt=0)
    topic_prefix: str = "funboost/"
    # the shared-subscription group of the MQTT kind ($share/<group>/<topic>)
    shared_group: str = "funboost"
    # A stable id per consumer (e.g. per pod) lets a restarted consumer take back its session: the
    # messages a crashed consumer held, and those the broker queued for it meanwhile. Default: a new
    # id per process (a crashed consumer's session is then never resumed; see docs/brokers/mqtt.md).
    client_id: Optional[str] = None
    session_expiry: int = Field(300, ge=0, description="seconds the broker keeps a disconnected consumer's session")
    receive_maximum: int = Field(64, ge=1, le=65535, description="unacknowledged messages the broker may send us")
    publish_timeout: float = Field(30.0, gt=0, description="how long publish waits for PUBACKs / a subscriber")
    # a stopping consumer hands its session (what it buffered and what the broker still queues for it) to
    # the other consumers within this time; what is left then stays in its session (see docs/brokers/mqtt.md)
    handoff_timeout: float = Field(10.0, gt=0, description="how long a stopping consumer may take to hand "
                                                           "its messages to the other consumers")

    @field_validator("shared_group")
    @classmethod
    def _group_name(cls, v: str) -> str:
        if not v or not re.fullmatch(r"[^/+#]+", v):
            raise ValueError("shared_group must be non-empty and contain no '/', '+' or '#'")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("topic_prefix may not contain wildcards")
        return v
