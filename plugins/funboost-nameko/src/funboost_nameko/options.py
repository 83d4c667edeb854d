"""``broker_exclusive_config`` of the ``nameko`` kind, with environment-variable fallbacks.

First wins: ``broker_exclusive_config``, the environment (``FUNBOOST_NAMEKO_AMQP_URI``; ``FUNBOOST_NAMEKO_SERVICE_CONFIG``,
a JSON object of nameko config keys, under ``service_config``), then the loopback default.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from pydantic import Field, field_validator

from funboost.plugins.broker import BrokerOptions

DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
ENV_AMQP_URI = "FUNBOOST_NAMEKO_AMQP_URI"
ENV_SERVICE_CONFIG = "FUNBOOST_NAMEKO_SERVICE_CONFIG"


class NamekoOptions(BrokerOptions):
    """Options of the ``nameko`` broker kind.

    ``amqp_uri``: nameko's ``AMQP_URI``. ``rpc_exchange``: nameko's ``rpc_exchange`` (``nameko-rpc``).
    ``method_name``: the name of the ``@rpc`` method of the queue's service (a plain nameko caller calls
    ``n.rpc.<queue>.<method_name>(**kwargs)``). ``service_config``: more nameko config keys for the
    service process (e.g. ``{"HEARTBEAT": 30}``); ``AMQP_URI``, ``rpc_exchange`` and ``max_workers``
    are set by the plugin (``max_workers`` = ``concurrent_num``).
    """

    amqp_uri: Optional[str] = None
    rpc_exchange: str = "nameko-rpc"
    method_name: str = Field(default="run", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    service_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("amqp_uri")
    @classmethod
    def _uri(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("amqp://", "amqps://")):
            raise ValueError(f"nameko amqp_uri must be amqp://... or amqps://..., not {v!r}")
        return v

    @field_validator("service_config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = {"AMQP_URI", "rpc_exchange", "max_workers"} & set(v)
        if owned:
            raise ValueError(f"service_config may not set {sorted(owned)}: use amqp_uri / rpc_exchange / "
                             "concurrent_num")
        return v

    def resolved_amqp_uri(self) -> str:
        return self.amqp_uri or os.environ.get(ENV_AMQP_URI) or DEFAULT_AMQP_URI

    def nameko_config(self, max_workers: int) -> dict[str, Any]:
        """The config dict of the service process's ``ServiceRunner``."""
        env = json.loads(os.environ.get(ENV_SERVICE_CONFIG) or "{}")
        self._config(env)
        return {**env, **self.service_config, "AMQP_URI": self.resolved_amqp_uri(), "rpc_exchange": self.rpc_exchange,
                "max_workers": max(1, int(max_workers))}
