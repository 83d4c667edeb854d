"""The funboost contract suite on the rq kind (data path through rq's storage; end-to-end through rq workers)."""
from __future__ import annotations

from funboost.testing import BrokerContract

from conftest import REDIS_URL


class TestRqContract(BrokerContract):
    broker_kind = "rq"
    broker_options = {"redis_url": REDIS_URL}
    # the killed consumer's process is gone from this host: its jobs come back at the next reclaim pass
    fast_reclaim_options = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2}
    redelivery_timeout = 10.0
