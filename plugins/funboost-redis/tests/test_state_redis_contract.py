"""The core state-backend contract suite on RedisStateBackend (real server on loopback)."""
from __future__ import annotations

import os

from funboost.testing.state_contract import StateBackendContract


class TestRedisStateContract(StateBackendContract):
    backend_name = "redis"
    backend_url = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
