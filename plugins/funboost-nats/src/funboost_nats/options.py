"""``broker_exclusive_config`` models of the NATS kinds. Connection settings default to the
environment (``FUNBOOST_NATS_URL``) and then to a server on loopback."""
from __future__ import annotations

import os
import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from funboost.plugins.broker import BrokerOptions

DEFAULT_URL = "nats://127.0.0.1:4222"


def _env_url() -> str:
    return os.environ.get("FUNBOOST_NATS_URL", DEFAULT_URL)


class NatsOptions(BrokerOptions):
    url: str = Field(default_factory=_env_url, description="nats://host:port (comma-separated for a cluster)")
    connect_timeout: float = Field(2.0, gt=0)
    reconnect_wait: float = Field(0.5, gt=0, description="seconds between reconnect attempts")
    publish_timeout: float = Field(30.0, gt=0, description="how long publish waits for the server / a consumer")


class JetStreamOptions(NatsOptions):
    # FUNBOOST_NATS_STREAM_PREFIX lets a test run (or a tenant) keep its streams apart
    stream_prefix: str = Field(default_factory=lambda: os.environ.get("FUNBOOST_NATS_STREAM_PREFIX", "funboost_"))
    subject_prefix: str = "funboost.js"
    durable: str = Field("funboost", description="the pull consumer shared by every process of a queue")
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(1, ge=1, le=5)
    ack_wait: float = Field(30.0, gt=0, description="a dead consumer's messages come back after this")
    # how often a message still running is reported in progress (default: ack_wait / 3)
    in_progress_interval: Optional[float] = Field(None, gt=0)
    # the pump keeps up to this many messages buffered ahead of the engine (held, reported in
    # progress); it never buffers more than the largest batch the engine asked for
    max_prefetch: int = Field(256, ge=1)
    pull_timeout: float = Field(2.0, gt=0, description="expiry of one pull request")
    # a Nats-Msg-Id per message, so a publish retried after a lost PubAck is stored once (costs ~15 %)
    dedup_publish_retries: bool = False
    max_ack_pending: int = Field(-1, description="-1 = no server-side cap (fetch is bounded by free capacity)")
    max_deliver: int = Field(-1, description="-1 = unlimited redeliveries (the engine dead-letters bad input)")

    @field_validator("stream_prefix", "durable")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]*", v):
            raise ValueError("may only contain letters, digits, '_' and '-'")
        return v

    @model_validator(mode="after")
    def _interval_below_ack_wait(self) -> "JetStreamOptions":
        if self.in_progress_interval is not None and self.in_progress_interval >= self.ack_wait:
            raise ValueError("in_progress_interval must be shorter than ack_wait")
        return self

    @property
    def progress_interval(self) -> float:
        return self.in_progress_interval or self.ack_wait / 3.0


class CoreOptions(NatsOptions):
    subject_prefix: str = "funboost.core"
    queue_group: str = "funboost"
    # True: publish is a request that a live consumer answers on receipt, so a message sent while no
    # consumer listens is retried (up to publish_timeout) instead of vanishing. False: plain
    # fire-and-forget publish (faster; dropped when nobody listens).
    confirm_publish: bool = True
    # messages a consumer buffers before NATS reports it as a slow consumer and drops the excess
    pending_msgs_limit: int = Field(65536, gt=0)
