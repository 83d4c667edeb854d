import os
import sys
import uuid

import pytest

from funboost.testing import wait_until

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
def queue_name():
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_broker(sqlite_dir):
    from funboost_sqlite import SqliteBroker

    made = []

    def make(queue_name, **options):
        b = SqliteBroker(queue_name, SqliteBroker.parse_options(options))
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def wait_for(cond, timeout=20.0, interval=0.02, what="condition"):
    return wait_until(cond, timeout, interval, what)


def worker_cmd(*args):
    return [sys.executable, os.path.join(HERE, "_worker.py"), *map(str, args)]
