"""The core contract suite applied to SQLALCHEMY on PostgreSQL, MariaDB and a sqlite file."""
import pytest
from funboost.testing import BrokerContract

from conftest import options_for, require

FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "check_pid": False}


class _Base(BrokerContract):
    broker_kind = "SQLALCHEMY"
    fast_reclaim_options = FAST  # lease expiry only: the slow path of the verdict
    redelivery_timeout = 10.0
    db = ""

    @pytest.fixture(autouse=True)
    def _available(self):
        require(self.db)


class TestPostgresql(_Base):
    db = "postgresql"
    broker_options = options_for("postgresql")


class TestMariadb(_Base):
    db = "mariadb"
    broker_options = options_for("mariadb")


class TestSqlite(_Base):
    db = "sqlite"
    broker_options = options_for("sqlite")
