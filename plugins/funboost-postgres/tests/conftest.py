"""Fixtures of the postgres tests: a schema of our own on the shared server (dropped at the end), unique
queue names, and helpers. Connection: env FUNBOOST_POSTGRES_TEST_DSN, else database ``test`` on loopback."""
import os
import uuid

import psycopg
import pytest
from psycopg import sql

from funboost.testing import require_service
from funboost.testing.fixtures import queue_name  # noqa: F401  (the fixture)
from funboost.testing.table_queue import tracked_brokers, wait_for  # noqa: F401  (wait_for: for the tests)

TEST_DSN = os.environ.get("FUNBOOST_POSTGRES_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def server_reason():
    try:
        with psycopg.connect(TEST_DSN, connect_timeout=3) as c:
            c.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {TEST_DSN}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_schema():
    reason = server_reason()
    if reason:
        require_service(reason)
    schema = f"fbtest_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(TEST_DSN, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(autouse=True)
def pg_env(pg_schema, monkeypatch):
    """Brokers made without options (the engine, subprocesses) find the test schema through the env."""
    monkeypatch.setenv("FUNBOOST_POSTGRES_DSN", TEST_DSN)
    monkeypatch.setenv("FUNBOOST_POSTGRES_SCHEMA", pg_schema)
    return pg_schema


@pytest.fixture
def make_broker(pg_env):
    from funboost_postgres import PostgresBroker

    yield from tracked_brokers(lambda queue, options: PostgresBroker(queue, PostgresBroker.parse_options(options)))
