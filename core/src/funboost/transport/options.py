"""``ServerTransportOptions``: the options every server transport has (where the consumer listens, where
publishers send, the token, buffer and timeouts), each also read from an environment variable
``FUNBOOST_<ENV_PREFIX>_<OPTION>`` so that connection settings never have to be written into a project.

A transport subclasses it, sets :attr:`~ServerTransportOptions.env_prefix`, overrides ``port``'s default
and adds its own options (which read the environment the same way)."""
from __future__ import annotations

import os
from typing import Any, ClassVar, Optional

from pydantic import Field, field_validator, model_validator

from funboost.plugins.broker import BrokerOptions

__all__ = ["ServerTransportOptions", "format_address"]


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class ServerTransportOptions(BrokerOptions):
    """Server side (the consumer): ``host``, ``port``, ``buffer_size``. Client side (publishers,
    ``sync_call``): ``addresses``, ``publish_timeout``, ``rpc_timeout``, ``health_check_interval``.
    Both: ``token``. An option given explicitly wins over its environment variable."""

    #: ``FUNBOOST_<env_prefix>_<OPTION>`` names the environment variable of each option (e.g. ``TCP``)
    env_prefix: ClassVar[str] = ""

    # loopback unless told otherwise; a non-loopback bind needs a token (funboost.transport.security)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # where publishers send: "host:port" of every consumer; default: [f"{host}:{port}"]
    addresses: Optional[list[str]] = None
    token: Optional[str] = None
    # the consumer's in-process buffer; when full the server refuses more (backpressure)
    buffer_size: int = Field(default=1000, ge=1)
    # how long publish() keeps trying (other consumers, backoff) before it gives up
    publish_timeout: float = Field(default=10.0, gt=0)
    # deadline of one publish / stats / purge attempt against one consumer
    rpc_timeout: float = Field(default=5.0, gt=0)
    # how often a consumer marked down is probed
    health_check_interval: float = Field(default=0.5, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        if not cls.env_prefix or not isinstance(data, dict):
            return data
        out = dict(data)
        for name in cls.model_fields:
            if name in out:
                continue
            value = os.environ.get(f"FUNBOOST_{cls.env_prefix}_{name.upper()}")
            if value in (None, ""):
                continue
            out[name] = [a.strip() for a in value.split(",") if a.strip()] if name == "addresses" else value
        return out

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        out = [a.strip() for a in value if a and a.strip()]
        for a in out:
            if ":" not in a:
                raise ValueError(f"address {a!r} must be 'host:port'")
        return out or None

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        if self.addresses:
            return list(self.addresses)
        host = self.host if self.host not in ("0.0.0.0", "::", "[::]") else "127.0.0.1"
        return [format_address(host, self.port)]
