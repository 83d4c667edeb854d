"""``broker_exclusive_config`` for the ``kafka`` kind, with environment-variable fallbacks.

Connection settings come from the options first, then from environment variables, then from loopback
defaults. Nothing is read from a file in the user's project.

======================================  ===========================  ==========================
option                                   environment variable          default
======================================  ===========================  ==========================
``bootstrap_servers``                    FUNBOOST_KAFKA_BOOTSTRAP_SERVERS  ``127.0.0.1:19092``
``security_protocol``                    FUNBOOST_KAFKA_SECURITY_PROTOCOL  ``PLAINTEXT``
``sasl_mechanism``                       FUNBOOST_KAFKA_SASL_MECHANISM     unset
``sasl_plain_username``                  FUNBOOST_KAFKA_SASL_USERNAME      unset
``sasl_plain_password``                  FUNBOOST_KAFKA_SASL_PASSWORD      unset
``ssl_cafile`` / ``ssl_certfile`` /      FUNBOOST_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE
``ssl_keyfile``
======================================  ===========================  ==========================
"""
from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from pydantic import Field

from funboost.plugins.broker import BrokerOptions

DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:19092"

_ENV = {
    "bootstrap_servers": "FUNBOOST_KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "FUNBOOST_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "FUNBOOST_KAFKA_SASL_MECHANISM",
    "sasl_plain_username": "FUNBOOST_KAFKA_SASL_USERNAME",
    "sasl_plain_password": "FUNBOOST_KAFKA_SASL_PASSWORD",
    "ssl_cafile": "FUNBOOST_KAFKA_SSL_CAFILE",
    "ssl_certfile": "FUNBOOST_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "FUNBOOST_KAFKA_SSL_KEYFILE",
}


class KafkaOptions(BrokerOptions):
    """Options of the ``kafka`` broker kind (``BoosterParams(broker_exclusive_config={...})``)."""

    # --- connection (None = environment variable, then loopback default) ---
    bootstrap_servers: Optional[Union[str, list[str]]] = None
    security_protocol: Optional[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]] = None
    sasl_mechanism: Optional[str] = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, GSSAPI
    sasl_plain_username: Optional[str] = None
    sasl_plain_password: Optional[str] = None
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_check_hostname: bool = True
    # Longest wait between reconnect attempts to a broker that is down (producer, consumer and admin client).
    # kafka-python doubles the wait after each failure up to 30 s by default, so after an outage of a few
    # seconds a client came back up to ~2 s (after a long one, up to 30 s) later than the broker did.
    reconnect_backoff_max_ms: int = Field(default=500, ge=10)

    # --- topics ---
    topic: Optional[str] = None  # default: the queue name
    auto_create_topic: bool = True
    num_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # --- consumer group ---
    group_id: Optional[str] = None  # default: the queue name (one group per queue)
    # 6 s is Kafka's minimum allowed session timeout; a short one makes a killed member's partitions
    # move quickly, and (on Tansu) keeps the first join short.
    session_timeout_ms: int = Field(default=6000, ge=1000)
    # kafka-python sends the first heartbeat one interval after it finds the coordinator again: that is how
    # soon a member learns that a restarted coordinator forgot it (and rejoins), when no commit tells it first
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    # the engine polls between batches; a single task longer than this makes the member leave the group
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    # records taken from kafka-python per poll; those beyond the engine's free capacity wait in the
    # broker (not committed) for the next fetch. Fewer, larger polls are much cheaper.
    max_poll_records: int = Field(default=500, ge=1)

    # --- producer ---
    acks: Union[Literal[0, 1], Literal["all"]] = "all"
    compression_type: Optional[Literal["gzip", "snappy", "lz4", "zstd"]] = None
    linger_ms: int = Field(default=2, ge=0)
    # wait for the broker's acknowledgement of every published batch (publish() returns only then)
    wait_for_ack: bool = True
    # how long publish() waits for the broker's acknowledgement before it raises KafkaPublishError (the
    # producer is then rebuilt: after a broker restart the old one may never recover its producer id)
    publish_timeout: float = Field(default=30.0, gt=0)

    # --- queue size ---
    # Some Kafka-compatible brokers (Tansu 0.x) answer ListOffsets(LATEST) with the base offset of the
    # last record batch + 1; a short fetch gives the true high watermark. Costs one fetch per call.
    verify_end_offsets: bool = True

    # raw kafka-python keyword arguments merged last (escape hatch for anything not modelled here)
    producer_config: dict[str, Any] = Field(default_factory=dict)
    consumer_config: dict[str, Any] = Field(default_factory=dict)

    def resolved(self, name: str) -> Any:
        """The option's value, else its environment variable, else the default."""
        value = getattr(self, name)
        if value is None and name in _ENV:
            value = os.environ.get(_ENV[name]) or None
        if value is None and name == "bootstrap_servers":
            value = DEFAULT_BOOTSTRAP_SERVERS
        return value

    def servers(self) -> list[str]:
        raw = self.resolved("bootstrap_servers")
        if isinstance(raw, str):
            raw = raw.split(",")
        return [s.strip() for s in raw if s and s.strip()]

    def connection_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by producer, consumer and admin client."""
        kw: dict[str, Any] = {"bootstrap_servers": self.servers()}
        for name in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                     "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = self.resolved(name)
            if value is not None:
                kw[name] = value
        if not self.ssl_check_hostname:
            kw["ssl_check_hostname"] = False
        kw["reconnect_backoff_max_ms"] = self.reconnect_backoff_max_ms
        return kw

    def client_kwargs(self) -> dict[str, Any]:
        """:meth:`connection_kwargs` for a producer or consumer. Their metadata requests must not create
        topics: funboost creates the topic itself with ``num_partitions`` (or not at all when
        ``auto_create_topic`` is off). A broker's auto-creation would use its own default partition count,
        and, after a broker came back without its log, would bring the topic back under a publish that is
        still waiting, so the publish could not tell that the topic it queued for was gone."""
        return dict(self.connection_kwargs(), allow_auto_create_topics=False)

    def connection_key(self) -> tuple:
        """Hashable identity of the connection settings (to share one producer/admin per process)."""
        return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                            for k, v in self.connection_kwargs().items()))
