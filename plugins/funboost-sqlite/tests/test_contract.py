"""The core contract suite (funboost.testing) applied to the sqlite broker; databases go to the test's
tmp dir through FUNBOOST_SQLITE_DIR (the autouse ``sqlite_dir`` fixture of conftest.py)."""
from funboost.testing import BrokerContract


class TestSqliteContract(BrokerContract):
    broker_kind = "sqlite"
    # heartbeat expiry only (no pid check), short: the redelivery test also covers the slow path
    fast_reclaim_options = {"check_pid": False, "heartbeat_interval": 0.2, "heartbeat_timeout": 1.0,
                            "reclaim_interval": 0.2}
    redelivery_timeout = 10.0

