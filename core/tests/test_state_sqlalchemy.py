"""The state-backend contract suite on the SQLAlchemy backend: on SQLite (no server needed) and on the
PostgreSQL named by ``FUNBOOST_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)."""
from __future__ import annotations

import os
import time
import uuid

import pytest

pytest.importorskip("sqlalchemy")

from funboost.testing.state_contract import StateBackendContract  # noqa: E402

PG_URL = os.environ.get("FUNBOOST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class TestSqlAlchemyOnSqliteContract(StateBackendContract):
    backend_name = "sqlalchemy"
    backend_url = None  # a SQLite file in the user data dir


class TestSqlAlchemyOnPostgresContract(StateBackendContract):
    backend_name = "sqlalchemy"
    backend_url = PG_URL


def test_status_columns_queryable_in_sql():
    """Status records land in real columns, so users can query them with plain SQL."""
    from funboost.state.sqlalchemy import SqlAlchemyStateBackend
    reason = SqlAlchemyStateBackend.check_available(PG_URL)
    if reason:
        from funboost.testing import require_service
        require_service(reason)
    import sqlalchemy as sa
    sb = SqlAlchemyStateBackend(PG_URL)
    table = f"q_{uuid.uuid4().hex[:10]}"
    now = time.time()
    sb.save_statuses(table, [{"task_id": "a", "queue_name": table, "success": False, "run_status": "finish",
                              "exception_type": "ZeroDivisionError", "time_start": now, "host": "h", "pid": 5},
                             {"task_id": "b", "queue_name": table, "success": True, "time_start": now + 1}], 60)
    with sb.engine.connect() as c:
        rows = c.execute(sa.text(f"SELECT task_id, exception_type FROM {sb.prefix}statuses "
                                 f"WHERE tbl = :t AND NOT success"), {"t": table}).all()
    assert [tuple(r) for r in rows] == [("a", "ZeroDivisionError")]
    sb.close()
