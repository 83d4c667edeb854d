"""``broker_exclusive_config`` of the ``rq`` kind, with an environment-variable fallback.

The Redis URL comes from (first wins): ``broker_exclusive_config["redis_url"]``, the environment
(``FUNBOOST_RQ_REDIS_URL``), then ``redis://127.0.0.1:6379/0``. The liveness settings
(``heartbeat_interval``, ``heartbeat_timeout``, ``reclaim_interval``, ``check_pid``) decide how fast a dead
worker's jobs run again (see :mod:`funboost_rq.storage`).
"""
from __future__ import annotations

import os
from typing import Any, Optional

from pydantic import Field

from funboost.engine.liveness import LivenessOptions
from funboost.plugins.broker import BrokerOptions

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_REDIS_URL = "FUNBOOST_RQ_REDIS_URL"


class RqOptions(BrokerOptions, LivenessOptions):
    """Options of the ``rq`` broker kind.

    ``result_ttl`` / ``failure_ttl``: how long rq keeps a finished / failed job and its result (rq's own
    job fields; funboost's RPC result and status records are kept by funboost's state backend).
    ``worker_options``: passed to rq's worker class (e.g. ``{"default_result_ttl": 60}``).
    """

    redis_url: Optional[str] = None
    result_ttl: int = Field(500, ge=-1)
    failure_ttl: int = Field(7 * 24 * 3600, ge=-1)
    worker_options: dict[str, Any] = Field(default_factory=dict)
    #: how often due ``enqueue_at`` / ``enqueue_in`` jobs are moved to their queue (seconds)
    schedule_poll_interval: float = Field(0.2, gt=0)

    def resolved_redis_url(self) -> str:
        return self.redis_url or os.environ.get(ENV_REDIS_URL) or DEFAULT_REDIS_URL

    def config_key(self) -> tuple:
        """What makes two boosters share one worker host (and one Redis client)."""
        return (self.resolved_redis_url(), self.heartbeat_interval, self.heartbeat_timeout,
                self.reclaim_interval, self.check_pid, self.result_ttl, self.failure_ttl,
                tuple(sorted((k, repr(v)) for k, v in self.worker_options.items())))
