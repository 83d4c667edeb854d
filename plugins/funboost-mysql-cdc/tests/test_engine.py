"""funboost's controls on MYSQL_CDC rows through @boost: requeue, retries, dead-letter with the row,
status records, filters by row; push/publish refused; the checkpoint covers everything finished."""
from __future__ import annotations

import json
import threading

import pytest

import funboost

from conftest import CONN, connect, drain, wait_for
from funboost import BoosterParams, boost
from funboost.exceptions import ExceptionForRequeue
from funboost.state.base import get_state_backend
from funboost_mysql_cdc import MysqlCdcPublishError


def test_controls_through_the_engine(brokers, queue_name, schema, tmp_path):
    calls: dict[int, int] = {}
    finished: list[int] = []
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="MYSQL_CDC", concurrent_num=4,
                         max_retry_times=2, is_push_to_dlx_queue_when_retry_max_times=True,
                         function_result_status_persistence_conf={"is_save_status": True},
                         log_to_console=False,
                         broker_exclusive_config={**CONN, "schemas": [schema], "tables": ["items"],
                                                  "dead_letter_options": {"db_path": str(tmp_path / "dlx.db")}}))
    def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None):
        row_id = values["id"]
        with lock:
            calls[row_id] = calls.get(row_id, 0) + 1
            n = calls[row_id]
        if row_id == 1 and n == 1:
            raise ExceptionForRequeue("once more")  # the engine re-publishes the row: it comes back
        if row_id == 2:
            raise ValueError("bad row")  # retried, then dead-lettered with the row
        with lock:
            finished.append(row_id)

    with pytest.raises(MysqlCdcPublishError, match="not applicable") as refused:
        on_row.push(schema="s", table="t", event="insert", binlog={}, timestamp=0, values={"id": 9})
    assert isinstance(refused.value, funboost.PublishRefused)  # what code written for any kind catches
    # whatever the arguments: it was an argument error ("missing required argument(s)") otherwise
    for call in (lambda: on_row.push(), lambda: on_row.publish({}), lambda: on_row.push(schema="s")):
        with pytest.raises(MysqlCdcPublishError, match="not applicable"):
            call()

    on_row.consume()
    try:
        wait_for(lambda: get_state_backend().get_flags(f"mysql_cdc:{queue_name}").get("checkpoint"), 60,
                 "the consumer fixed its start position")
        with connect() as c, c.cursor() as cur:
            cur.execute(f"INSERT INTO {schema}.items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        wait_for(lambda: sorted(finished) == [1, 3], 60, "rows 1 (after a requeue) and 3 finished")
        assert calls[1] == 2
        wait_for(lambda: calls.get(2) == 3, 30, "row 2 tried 1 + 2 retries")
        dlx = on_row.consumer.broker.dead_letter_broker()
        wait_for(lambda: dlx.queue_size().ready == 1, 30, "row 2 in the dead-letter queue")
        [dead] = dlx.fetch(1, 1.0)
        body = json.loads(dead.body)
        assert body["values"]["id"] == 2 and body["table"] == "items"
        assert "bad row" in body["extra"]["dead_letter_reason"]
        dlx.ack([dead])
        wait_for(lambda: len(on_row.query_statuses(limit=20)) >= 3, 30, "status records")
    finally:
        on_row.stop_consume()
    # everything was settled: a new reader of the queue starts after row 3
    b = brokers(queue_name, schemas=[schema], tables=["items"])
    with connect() as c, c.cursor() as cur:
        cur.execute(f"INSERT INTO {schema}.items (id) VALUES (4)")
    assert [m["values"]["id"] for m in drain(b, 1)] == [4]


def test_rows_written_right_after_consume_returns_are_delivered(queue_name, schema, mariadb_available):
    """The hello-world: consume(), then write rows at once (no waiting for the start position): a new
    queue starts at the binlog's end as of consume(), so every row written after it arrives."""
    got: list[int] = []
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="MYSQL_CDC", log_to_console=False,
                         broker_exclusive_config={**CONN, "schemas": [schema], "tables": ["items"]}))
    def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None):
        with lock:
            got.append(values["id"])

    on_row.consume()
    try:
        with connect() as c, c.cursor() as cur:
            for i in range(3):
                cur.execute(f"INSERT INTO {schema}.items (id, name) VALUES (%s, 'x')", (i,))
        wait_for(lambda: len(got) >= 3, 60, "the 3 rows written right after consume()")
    finally:
        on_row.stop_consume()
    assert sorted(got) == [0, 1, 2]
