"""The funboost contract suite on the huey kind: RedisHuey (the default) and SqliteHuey.

The data-path tests take huey messages directly (under the broker's own lease on Redis); the
end-to-end tests run huey's consumer in this process."""
from __future__ import annotations

import os

import pytest

from funboost.testing import BrokerContract

from conftest import REDIS_URL, check_redis
from funboost_huey import HueyBroker, HueyOptions


class TestHueyRedisContract(BrokerContract):
    broker_kind = "huey"
    broker_options = {"redis_url": REDIS_URL}
    # the killed consumer ran on this host: its pid is gone, so its tasks come back at the next pass
    fast_reclaim_options = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2}
    redelivery_timeout = 10.0

    @pytest.fixture(autouse=True)
    def _service_and_cleanup(self, queue_name):
        check_redis()
        yield
        for name in (queue_name, f"{queue_name}_dlx"):
            b = HueyBroker(name, HueyOptions(redis_url=REDIS_URL))
            b.purge()
            b.close()


class TestHueySqliteContract(BrokerContract):
    """SqliteHuey under its real capabilities: at-most-once (huey deletes a task's row when a worker
    takes it), no in-flight count, priorities."""

    broker_kind = "huey_sqlite_kind:SqliteHueyBroker"

    @pytest.fixture(autouse=True)
    def _sqlite_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("FUNBOOST_HUEY_STORAGE", "sqlite")
        monkeypatch.setenv("FUNBOOST_HUEY_SQLITE_FILE", str(tmp_path / "contract.db"))
        # the cross-process tests' child processes import the test-only class too
        here = os.path.dirname(os.path.abspath(__file__))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
