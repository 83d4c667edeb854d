"""Shared helpers: the redis URL under test, skip/fail when unreachable, a private redis-server for
restart tests (on its own loopback port, never the shared 6379)."""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Iterator

import pytest
import redis

from funboost.testing import require_service
from funboost.testing.servers import PrivateRedis, free_port  # noqa: F401 (free_port: test_cluster_sentinel)

URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        require_service(f"redis at {URL} is not reachable: {exc}")
    return URL


@pytest.fixture
def qname() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if not shutil.which("redis-server"):
        require_service("redis-server binary not found (apt-get install redis-server)")
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.cleanup()
