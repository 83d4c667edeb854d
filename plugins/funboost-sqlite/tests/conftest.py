import os
import sys

import pytest

from funboost.testing.fixtures import queue_name  # noqa: F401  (the fixture)
from funboost.testing.table_queue import tracked_brokers, wait_for  # noqa: F401  (wait_for: for the tests)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def sqlite_dir(tmp_path, monkeypatch):
    """Every test gets its own database directory, through the documented env var."""
    d = tmp_path / "queues"
    monkeypatch.setenv("FUNBOOST_SQLITE_DIR", str(d))
    monkeypatch.delenv("FUNBOOST_SQLITE_PATH", raising=False)
    monkeypatch.setenv("FUNBOOST_DATA_DIR", str(tmp_path / "data"))  # core's state backend, if used
    return d


@pytest.fixture
def make_broker(sqlite_dir):
    from funboost_sqlite import SqliteBroker

    yield from tracked_brokers(lambda queue, options: SqliteBroker(queue, SqliteBroker.parse_options(options)),
                               purge=False)  # each test has a directory of its own


def worker_cmd(*args):
    return [sys.executable, os.path.join(HERE, "_worker.py"), *map(str, args)]
