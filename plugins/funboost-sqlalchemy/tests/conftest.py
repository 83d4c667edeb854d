"""Fixtures of the sqlalchemy tests: three databases (PostgreSQL and MariaDB on loopback, a sqlite file),
each test with a table prefix of this session's own (the tables are dropped at the end; shared databases
are never dropped). URLs: env FUNBOOST_SQLALCHEMY_TEST_PG_URL / _MYSQL_URL to point elsewhere."""
import os
import shutil
import tempfile
import uuid

import pytest
import sqlalchemy as sa

from funboost.testing import require_service
from funboost.testing.fixtures import queue_name  # noqa: F401  (the fixture)
from funboost.testing.table_queue import tracked_brokers, wait_for  # noqa: F401  (wait_for: for the tests)

SESSION_PREFIX = f"fbsa_{uuid.uuid4().hex[:8]}_"
_SQLITE_DIR = tempfile.mkdtemp(prefix="fbsa_")

URLS = {
    "postgresql": os.environ.get("FUNBOOST_SQLALCHEMY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("FUNBOOST_SQLALCHEMY_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "sqlite": f"sqlite:///{os.path.join(_SQLITE_DIR, 'queues.sqlite3')}",
}
_reasons: dict = {}


def unavailable(db):
    if db not in _reasons:
        from funboost_sqlalchemy import SqlAlchemyBroker, SqlAlchemyOptions
        _reasons[db] = SqlAlchemyBroker.check_available(SqlAlchemyOptions(url=URLS[db]))
    return _reasons[db]


def options_for(db, **extra):
    return {"url": URLS[db], "table_prefix": SESSION_PREFIX, **extra}


def require(db):
    reason = unavailable(db)
    if reason:
        require_service(reason)


@pytest.fixture(scope="session", autouse=True)
def drop_test_tables():
    yield
    for db, url in URLS.items():
        if unavailable(db):
            continue
        engine = sa.create_engine(url)
        try:
            from funboost_sqlalchemy.broker import make_tables
            make_tables(SESSION_PREFIX)[0].drop_all(engine, checkfirst=True)
        finally:
            engine.dispose()
    shutil.rmtree(_SQLITE_DIR, ignore_errors=True)


@pytest.fixture(params=list(URLS))
def db(request):
    require(request.param)
    return request.param


@pytest.fixture
def make_broker(db):
    from funboost_sqlalchemy import SqlAlchemyBroker

    yield from tracked_brokers(
        lambda queue, options: SqlAlchemyBroker(queue, SqlAlchemyBroker.parse_options(options_for(db, **options))))
