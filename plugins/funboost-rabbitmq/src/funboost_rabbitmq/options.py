"""``broker_exclusive_config`` for the rabbitmq kind, and how the connection URL is found.

Key names follow the original funboost where it had one (``x-max-priority``, ``queue_durable``,
``exchange_name``, ``routing_key_for_bind`` ...), so existing configurations validate unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from pydantic import AliasChoices, Field, field_validator

from funboost.plugins.broker import BrokerOptions

ENV_URL = "FUNBOOST_RABBITMQ_URL"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_DLX_EXCHANGE = "funboost.dlx"
DEFAULT_MAX_PRIORITY = 10


class RabbitmqOptions(BrokerOptions):
    """Options of the ``rabbitmq`` broker kind (all optional)."""

    # --- connection ---
    url: Optional[str] = Field(
        default=None, description=f"AMQP URL (amqp:// or amqps://, vhost and credentials included). "
        f"Default: env {ENV_URL}, else {DEFAULT_URL}")
    heartbeat: int = Field(default=30, ge=0, description="AMQP heartbeat in seconds (0 turns it off)")
    reconnect_max_delay: float = Field(default=10.0, gt=0, description="cap of the reconnect backoff")
    publish_timeout: float = Field(
        default=60.0, gt=0, description="how long publish() keeps retrying through reconnects before raising")

    # --- queue ---
    queue_durable: bool = Field(default=True, validation_alias=AliasChoices("queue_durable", "durable"))
    max_priority: Optional[int] = Field(
        default=DEFAULT_MAX_PRIORITY, ge=0, le=255, validation_alias=AliasChoices("max_priority", "x-max-priority"),
        description=f"declare the queue with x-max-priority (default {DEFAULT_MAX_PRIORITY}, so that priorities "
                    "work out of the box; 0 or None: a plain queue without priorities). Quorum and stream "
                    "queues (queue_arguments x-queue-type) get no x-max-priority unless it is set explicitly")
    queue_arguments: dict[str, Any] = Field(
        default_factory=dict, description="extra x-arguments for queue_declare (e.g. x-max-length)")
    dead_letter_exchange: Optional[str] = Field(
        default=DEFAULT_DLX_EXCHANGE,
        description="direct exchange that routes dead letters to the queue '<queue>_dlx'; the queue is declared "
                    "with it as x-dead-letter-exchange. None (or ''): no dead-letter arguments on the queue (e.g. "
                    "to use an existing plain queue); funboost then publishes its dead letters straight to "
                    "'<queue>_dlx', and RabbitMQ's own (expired, over length) follow the queue's own arguments")
    passive: bool = Field(
        default=False,
        description="use the queue as it exists: only check that it exists (passive queue.declare), never "
                    "declare it or its arguments (max_priority, dead_letter_exchange, queue_arguments are not "
                    "applied to it). A missing queue is an error (QueueNotFound)")

    # --- consuming ---
    prefetch_count: Optional[int] = Field(
        default=None, ge=1, le=65535,
        description="basic_qos prefetch; default: 2x the largest batch the engine asked for (its free capacity), "
                    "growing to 10x (<= 1000) while the engine starves")
    no_ack: bool = Field(
        default=False, description="auto-ack on delivery (faster; a killed consumer loses what it held)")

    # --- exchange routing (default: the default exchange, routed by queue name) ---
    exchange_name: str = Field(default="", validation_alias=AliasChoices("exchange_name", "exchange"))
    exchange_type: Literal["direct", "fanout", "topic", "headers"] = "direct"
    exchange_durable: bool = Field(
        default=True, validation_alias=AliasChoices("exchange_durable", "exchange_declare_durable"))
    routing_key_for_publish: Optional[str] = Field(
        default=None, description="routing key of published messages (default: the queue name)")
    routing_key_for_bind: Optional[Union[str, list[str]]] = Field(
        default=None, description="binding key(s) of the queue (default: queue name; '#' for topic)")
    headers_for_bind: dict[str, Any] = Field(default_factory=dict, description="headers exchange bind args")
    x_match_for_bind: Literal["all", "any"] = "all"
    headers_for_publish: dict[str, Any] = Field(
        default_factory=dict, description="headers added to every published message")
    broadcast_queue_expires: int = Field(
        default=60_000, ge=1000,
        description="fanout: ms an idle per-consumer queue survives (lets a reconnect resume it)")

    # --- delay ---
    delay_mode: Literal["auto", "plugin", "ttl"] = Field(
        default="auto", description="auto: the delayed-message exchange plugin if the server has it, "
        "else per-delay TTL queues that dead-letter back into the queue")

    @field_validator("dead_letter_exchange")
    @classmethod
    def _no_empty_dlx(cls, v: Optional[str]) -> Optional[str]:
        return v or None  # '' and None both mean "no dead-letter exchange argument"

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("amqp://", "amqps://")):
            raise ValueError("url must start with amqp:// or amqps://")
        return v

    def effective_max_priority(self) -> int:
        """The x-max-priority queues are declared with (0: none). The default is not applied to quorum or
        stream queues, which RabbitMQ declares without classic priorities."""
        if not self.max_priority:
            return 0
        queue_type = self.queue_arguments.get("x-queue-type", "classic")
        if queue_type != "classic" and "max_priority" not in self.model_fields_set:
            return 0
        return self.max_priority

    def resolved_url(self) -> str:
        return self.url or os.environ.get(ENV_URL) or DEFAULT_URL

    def bind_keys(self, queue_name: str) -> list[str]:
        if self.exchange_type in ("fanout", "headers"):
            return [""]
        keys = self.routing_key_for_bind
        if keys is None or keys == "" or keys == []:
            return ["#"] if self.exchange_type == "topic" else [queue_name]
        return [keys] if isinstance(keys, str) else list(keys)

    def exchange_for(self, queue_name: str) -> str:
        """The exchange messages are published to ('' = default exchange). A fanout/topic/headers
        exchange without a name is named after the queue."""
        if self.exchange_name:
            return self.exchange_name
        return "" if self.exchange_type == "direct" else queue_name

    def publish_key(self, queue_name: str) -> str:
        if self.exchange_type in ("fanout", "headers"):
            return ""
        return self.routing_key_for_publish or queue_name


class RabbitmqComplexRoutingOptions(RabbitmqOptions):
    """Options of the ``rabbitmq_complex_routing`` kind: the original funboost's exchange routing. Every
    queue bound to an exchange gets its own copy of each message routed to it; the consumers of one queue
    share its messages (also with fanout: one copy per bound queue, not per consumer). Defaults follow the
    original: an empty binding key means the queue name (topic too), and no priority queue."""

    max_priority: Optional[int] = Field(
        default=None, ge=0, le=255, validation_alias=AliasChoices("max_priority", "x-max-priority"),
        description="declare the queue with x-max-priority (default none, as the original)")
    declare_queue_on_publish: Optional[bool] = Field(
        default=None, description="publishers declare and bind this queue too (default: only when the "
        "default exchange is used). With an exchange, a publisher is usually an instance name, not a "
        "queue: declaring it would collect every message routed to it")

    def bind_keys(self, queue_name: str) -> list[str]:
        if self.exchange_type in ("fanout", "headers"):
            return [""]
        keys = self.routing_key_for_bind
        if keys is None or keys == "" or keys == []:
            return [queue_name]
        return [keys] if isinstance(keys, str) else list(keys)

    def exchange_for(self, queue_name: str) -> str:
        return self.exchange_name

