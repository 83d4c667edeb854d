"""``broker_exclusive_config`` of the ``dramatiq`` kind, with environment-variable fallbacks.

Connection settings come from (first wins): ``broker_exclusive_config``, the environment
(``FUNBOOST_DRAMATIQ_BROKER_URL``, ``FUNBOOST_DRAMATIQ_HEARTBEAT_TIMEOUT``), then loopback defaults.
"""
from __future__ import annotations

import os
from typing import Optional

from pydantic import Field, field_validator

from funboost.plugins.broker import BrokerOptions

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
ENV_BROKER_URL = "FUNBOOST_DRAMATIQ_BROKER_URL"
ENV_HEARTBEAT_TIMEOUT = "FUNBOOST_DRAMATIQ_HEARTBEAT_TIMEOUT"
#: seconds; dramatiq's own default is 60 s, with maintenance left to chance (see funboost_dramatiq.heartbeat)
DEFAULT_HEARTBEAT_TIMEOUT = 10.0

REDIS_SCHEMES = ("redis", "rediss", "unix")
AMQP_SCHEMES = ("amqp", "amqps")


class DramatiqOptions(BrokerOptions):
    """Options of the ``dramatiq`` broker kind.

    ``broker_url``: ``redis://...`` selects dramatiq's ``RedisBroker``, ``amqp://...`` its ``RabbitmqBroker``.
    """

    broker_url: Optional[str] = None
    # Redis: the prefix of every dramatiq key (dramatiq's own default)
    namespace: str = "dramatiq"
    # Redis: seconds without a heartbeat after which a worker counts as dead and its unacked messages go
    # back to their queue. Living workers of this plugin beat every fifth of it, whatever their tasks take.
    heartbeat_timeout: Optional[float] = Field(default=None, gt=0)
    # RabbitMQ: queues declared with x-max-priority (must match existing queues); None: no priorities
    max_priority: Optional[int] = None
    # RabbitMQ: wait for the server's confirm on each publish (dramatiq's confirm_delivery)
    confirm_delivery: bool = True

    @field_validator("max_priority")
    @classmethod
    def _prio(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and not 1 <= v <= 255:
            raise ValueError("max_priority must be between 1 and 255 (or None)")
        return v

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            url_family(v)
        return v

    def resolved_broker_url(self) -> str:
        url = self.broker_url or os.environ.get(ENV_BROKER_URL) or DEFAULT_BROKER_URL
        url_family(url)
        return url

    def resolved_heartbeat_timeout(self) -> float:
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        env = os.environ.get(ENV_HEARTBEAT_TIMEOUT)
        return float(env) if env else DEFAULT_HEARTBEAT_TIMEOUT

    def family(self) -> str:
        return url_family(self.resolved_broker_url())


def url_family(url: str) -> str:
    """``redis`` or ``amqp`` from a broker URL (the first of a ``;`` list); anything else is an error."""
    scheme = url.split(";", 1)[0].strip().split("://", 1)[0].lower()
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in AMQP_SCHEMES:
        return "amqp"
    raise ValueError(f"dramatiq broker_url must be redis://... or amqp://..., not {url!r}")
