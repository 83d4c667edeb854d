"""``broker_exclusive_config`` of the ``huey`` kind, with environment-variable fallbacks.

Connection settings come from (first wins): ``broker_exclusive_config``, the environment
(``FUNBOOST_HUEY_STORAGE``, ``FUNBOOST_HUEY_REDIS_URL``, ``FUNBOOST_HUEY_SQLITE_FILE``), then
defaults (``redis``, ``redis://127.0.0.1:6379/0``, ``funboost_huey.db``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Literal, Optional

from pydantic import Field

from funboost.engine.liveness import LivenessOptions
from funboost.plugins.broker import BrokerOptions

ENV_STORAGE = "FUNBOOST_HUEY_STORAGE"
ENV_REDIS_URL = "FUNBOOST_HUEY_REDIS_URL"
ENV_SQLITE_FILE = "FUNBOOST_HUEY_SQLITE_FILE"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SQLITE_FILE = "funboost_huey.db"

StorageName = Literal["redis", "sqlite"]


class HueyOptions(BrokerOptions, LivenessOptions):
    """Options of the ``huey`` broker kind.

    ``storage``: ``"redis"`` (``RedisHuey``, the default: at-least-once, a SIGKILLed consumer's tasks
    come back, see :mod:`funboost_huey.storage`) or ``"sqlite"`` (``SqliteHuey``: at-most-once, huey
    deletes a task from its table when a worker takes it). The liveness settings
    (``heartbeat_interval``, ``heartbeat_timeout``, ``reclaim_interval``, ``check_pid``) apply to Redis.
    ``huey_options`` are passed to the ``Huey`` constructor (e.g. ``{"compression": True}``);
    ``consumer_options`` to huey's ``Consumer`` (e.g. ``{"scheduler_interval": 2}``).
    ``store_results``: keep huey's own result store (for plain huey callers' ``Result.get()``);
    funboost's RPC results do not need it.
    """

    storage: Optional[StorageName] = None
    redis_url: Optional[str] = None
    sqlite_filename: Optional[str] = None
    store_results: bool = False
    huey_options: dict[str, Any] = Field(default_factory=dict)
    consumer_options: dict[str, Any] = Field(default_factory=dict)

    def resolved_storage(self) -> StorageName:
        value = self.storage or os.environ.get(ENV_STORAGE) or "redis"
        if value not in ("redis", "sqlite"):
            raise ValueError(f"{ENV_STORAGE} must be 'redis' or 'sqlite', not {value!r}")
        return value  # type: ignore[return-value]

    def resolved_redis_url(self) -> str:
        return self.redis_url or os.environ.get(ENV_REDIS_URL) or DEFAULT_REDIS_URL

    def resolved_sqlite_filename(self) -> str:
        return self.sqlite_filename or os.environ.get(ENV_SQLITE_FILE) or DEFAULT_SQLITE_FILE

    def config_key(self) -> str:
        """What makes two boosters share a Huey instance (with the queue name)."""
        storage = self.resolved_storage()
        where = self.resolved_redis_url() if storage == "redis" else os.path.abspath(self.resolved_sqlite_filename())
        return json.dumps({"storage": storage, "where": where, "results": self.store_results,
                           "huey": self.huey_options}, sort_keys=True, default=repr)
