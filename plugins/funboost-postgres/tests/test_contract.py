"""The core contract suite applied to POSTGRES, in the tests' own schema (env set by conftest.py)."""
from funboost.testing import BrokerContract


class TestPostgresContract(BrokerContract):
    broker_kind = "POSTGRES"
    # heartbeat expiry and session loss noticed quickly
    fast_reclaim_options = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}
    redelivery_timeout = 10.0
