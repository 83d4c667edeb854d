"""The MYSQL_CDC broker on the project's MariaDB: values, filters, errors, resume, DDL, big transactions."""
from __future__ import annotations

import datetime as dt

import pytest

from conftest import connect, drain, wait_for
from funboost.plugins.broker import OutgoingMessage
from funboost_mysql_cdc import MysqlCdcOptions, MysqlCdcPublishError, MysqlCdcServerConfigError


def sql(*statements: str, args=None) -> None:
    with connect() as c, c.cursor() as cur:
        for s in statements:
            cur.execute(s, args)


def test_insert_update_delete_values(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema])
    assert b.fetch(10, 0.2) == []  # starts reading at "now"
    sql(f"INSERT INTO {schema}.items VALUES (1, 'apple', 1.50, '2024-05-06 07:08:09', x'00ff')",
        f"UPDATE {schema}.items SET name='pear', amount=2.25 WHERE id=1",
        f"DELETE FROM {schema}.items WHERE id=1")
    ins, upd, dele = drain(b, 3)
    for m in (ins, upd, dele):
        assert (m["schema"], m["table"]) == (schema, "items")
        assert m["binlog"]["file"].startswith("mysql-bin.") and m["binlog"]["pos"] > 4
        assert abs(m["timestamp"] - dt.datetime.now().timestamp()) < 120
    assert ins["event"] == "insert" and "before" not in ins
    assert ins["values"] == {"id": 1, "name": "apple", "amount": "1.50", "created": "2024-05-06T07:08:09",
                             "data": {"base64": "AP8="}}
    assert upd["event"] == "update"
    assert upd["before"]["name"] == "apple" and upd["after"]["name"] == "pear"
    assert upd["after"]["amount"] == "2.25" and "values" not in upd
    assert dele["event"] == "delete" and dele["values"]["name"] == "pear"
    assert ins["extra"]["task_id"] == f"{ins['binlog']['file']}:{ins['binlog']['pos']}:0"


def test_table_and_event_filters(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema], tables=[f"{schema}.items"], exclude_events=["delete"])
    b.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.other VALUES (1, 1)",
        f"INSERT INTO {schema}.items (id, name) VALUES (1, 'a')",
        f"DELETE FROM {schema}.items WHERE id=1",
        f"INSERT INTO {schema}.items (id, name) VALUES (2, 'b')")
    got = drain(b, 2)
    assert [(m["table"], m["event"], m["values"]["id"]) for m in got] == [("items", "insert", 1), ("items", "insert", 2)]
    assert b.fetch(10, 0.5) == []  # the delete and the other table were filtered out

    b2 = brokers(queue_name + "_b", schemas=[schema], exclude_tables=["items"], events=["insert", "delete"])
    b2.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id, name) VALUES (3, 'c')", f"INSERT INTO {schema}.other VALUES (2, 2)",
        f"UPDATE {schema}.other SET v=3 WHERE id=2", f"DELETE FROM {schema}.other WHERE id=2")
    got = drain(b2, 2)
    assert [(m["table"], m["event"]) for m in got] == [("other", "insert"), ("other", "delete")]


def test_options_validated():
    with pytest.raises(ValueError, match="start_log_file"):
        MysqlCdcOptions(start="position")
    with pytest.raises(ValueError, match="no row event"):
        MysqlCdcOptions(events=["insert"], exclude_events=["insert"])
    with pytest.raises(ValueError):
        MysqlCdcOptions(no_such_option=1)


def test_env_vars(monkeypatch):
    monkeypatch.setenv("FUNBOOST_MYSQL_CDC_PORT", "3399")
    monkeypatch.setenv("FUNBOOST_MYSQL_CDC_USER", "cdc")
    s = MysqlCdcOptions().connection_settings()
    assert (s["port"], s["user"], s["host"]) == (3399, "cdc", "127.0.0.1")
    assert MysqlCdcOptions(port=3307).connection_settings()["port"] == 3307


def test_publish_is_not_applicable(brokers, queue_name):
    b = brokers(queue_name)
    with pytest.raises(MysqlCdcPublishError, match="not applicable"):
        b.publish([OutgoingMessage(body="{}", task_id="x")])


def test_resume_from_checkpoint_without_history(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema])
    b.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id) VALUES (1), (2), (3), (4)")
    ds = []
    wait_for(lambda: ds.extend(b.fetch(10, 0.2)) or len(ds) >= 4, 20, "4 rows")
    b.ack([ds[0], ds[2]])  # row 2 unfinished: the checkpoint stays after row 1
    b.close()
    b2 = brokers(queue_name, schemas=[schema])
    got = drain(b2, 3)
    assert [m["values"]["id"] for m in got] == [2, 3, 4]  # 3 again (behind unfinished 2), 1 not
    sql(f"INSERT INTO {schema}.items (id) VALUES (5)")
    assert [m["values"]["id"] for m in drain(b2, 1)] == [5]


def test_start_at_position(brokers, queue_name, schema):
    with connect() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        f, p = cur.fetchone()[:2]
    sql(f"INSERT INTO {schema}.items (id) VALUES (10)")
    b = brokers(queue_name, schemas=[schema], start="position", start_log_file=f, start_log_pos=p)
    assert [m["values"]["id"] for m in drain(b, 1)] == [10]


@pytest.mark.parametrize("grants, refused", [("SELECT", "BINLOG MONITOR"),  # SHOW MASTER STATUS refused
                                              ("SELECT, BINLOG MONITOR", "REPLICATION SLAVE")])  # the dump refused
def test_user_without_replication_grants(brokers, queue_name, schema, grants, refused):
    user = queue_name[:30]
    sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'", f"GRANT {grants} ON *.* TO '{user}'@'127.0.0.1'")
    try:
        b = brokers(queue_name, user=user, password="pw", schemas=[schema])
        with pytest.raises(MysqlCdcServerConfigError, match=f"(?s){refused}.*REPLICATION SLAVE"):
            b.fetch(1, 0.5)
        # fixing the grants is enough: the next fetch starts over, no consumer restart
        sql(f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'127.0.0.1'")
        assert b.fetch(1, 0.2) == []
        sql(f"INSERT INTO {schema}.items (id) VALUES (7)")
        assert [m["values"]["id"] for m in drain(b, 1)] == [7]
    finally:
        sql(f"DROP USER '{user}'@'127.0.0.1'")


def test_ddl_mid_stream(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema], tables=["items"])
    b.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id, name) VALUES (1, 'before')",
        f"ALTER TABLE {schema}.items ADD COLUMN color VARCHAR(10) DEFAULT 'red' AFTER name",
        f"INSERT INTO {schema}.items (id, name, color) VALUES (2, 'after', 'blue')",
        f"UPDATE {schema}.items SET color='green' WHERE id=1")
    a, c, u = drain(b, 3)
    assert "color" not in a["values"] and a["values"]["name"] == "before"
    assert c["values"]["color"] == "blue" and c["values"]["name"] == "after"
    assert u["before"]["color"] == "red" and u["after"]["color"] == "green"


def test_large_transaction(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema], buffer_rows=5000)
    b.fetch(1, 0.1)
    n = 50_000
    with connect(autocommit=False) as c, c.cursor() as cur:
        cur.executemany(f"INSERT INTO {schema}.items (id, name) VALUES (%s, %s)", [(i, f"n{i}") for i in range(n)])
        c.commit()
    got = drain(b, n, deadline_s=240)
    assert [m["values"]["id"] for m in got] == list(range(n))
    b.close()
    # all finished: a restart gets nothing of it again
    b2 = brokers(queue_name, schemas=[schema])
    sql(f"INSERT INTO {schema}.items (id) VALUES (-1)")
    assert [m["values"]["id"] for m in drain(b2, 1)] == [-1]


def test_server_config_error_names_setting(brokers, queue_name):
    sql("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        b = brokers(queue_name)
        with pytest.raises(MysqlCdcServerConfigError, match="binlog_row_metadata"):
            b.fetch(1, 0.1)
    finally:
        sql("SET GLOBAL binlog_row_metadata = 'FULL'")


def test_one_reader_per_queue(brokers, queue_name, schema):
    first = brokers(queue_name, schemas=[schema])
    second = brokers(queue_name, schemas=[schema])
    first.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id) VALUES (1)")
    assert second.fetch(10, 0.3) == []  # stands by while the first holds the reader lock
    assert [m["values"]["id"] for m in drain(first, 1)] == [1]
    first.close()  # releases the lock: the second takes over from the checkpoint
    sql(f"INSERT INTO {schema}.items (id) VALUES (2)")
    assert [m["values"]["id"] for m in drain(second, 1)] == [2]


def test_purge_skips_to_now(brokers, queue_name, schema):
    b = brokers(queue_name, schemas=[schema])
    b.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id) VALUES (1), (2)")
    assert b.purge() == -1
    assert b.queue_size().ready is None
    sql(f"INSERT INTO {schema}.items (id) VALUES (3)")
    assert [m["values"]["id"] for m in drain(b, 1)] == [3]


def test_checkpoint_follows_the_binlog_while_only_unwatched_tables_change(brokers, queue_name, schema):
    """A queue whose tables are quiet while others change must not keep its checkpoint in an old binlog
    file: once the server purges that file (binlog_expire_logs_seconds) a restart could not resume."""
    b = brokers(queue_name, schemas=[schema], tables=["items"])
    b.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id) VALUES (1)")
    drain(b, 1)
    sql(*[f"INSERT INTO {schema}.other VALUES ({i}, 0)" for i in range(20)])
    sql("FLUSH BINARY LOGS")
    sql(f"INSERT INTO {schema}.other VALUES (100, 0)")
    with connect() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        current_file = cur.fetchone()[0]

    def moved() -> bool:
        assert b.fetch(10, 0.2) == []  # nothing of the watched table
        saved = b._checkpoints().load()
        # (MariaDB may end the file with a binlog checkpoint event after the last commit: the file is the test)
        return saved is not None and saved.log_file == current_file
    wait_for(moved, 30, f"the checkpoint in {current_file}")
    b.close()
    b2 = brokers(queue_name, schemas=[schema], tables=["items"])
    b2.fetch(1, 0.1)
    sql(f"INSERT INTO {schema}.items (id) VALUES (2)")
    assert [m["values"]["id"] for m in drain(b2, 1)] == [2]


TIME_VALUES = ["12:34:56", "-12:34:56", "12:34:56.5", "-00:00:01.5", "-12:34:56.789", "-838:59:59", "838:59:59",
               "-00:00:00.000001", "-01:00:00.25", "00:00:00", "-837:59:59.999999", "123:45:06.000123", "-00:00:00.01"]


def test_time_values_of_every_precision_arrive_as_the_server_shows_them(brokers, queue_name, schema):
    """mysql-replication decoded a negative TIME with a fraction wrong (-12:34:56.789 as -12:34:56.211,
    -00:00:00.000001 as -00:00:00.999999): funboost_mysql_cdc.time2 reads TIME2 itself. The truth is the
    server's own text of each value, at precisions 0, 2, 3 and 6."""
    with connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE TABLE {schema}.times (id INT PRIMARY KEY, t0 TIME, t2 TIME(2), t3 TIME(3), "
                    f"t6 TIME(6)) ENGINE=InnoDB")
    b = brokers(queue_name, schemas=[schema], tables=["times"])
    assert b.fetch(10, 0.2) == []
    with connect() as c, c.cursor() as cur:
        for i, v in enumerate(TIME_VALUES):
            cur.execute(f"INSERT INTO {schema}.times VALUES (%s, %s, %s, %s, %s)", (i, v, v, v, v))
        cur.execute(f"SELECT CAST(t0 AS CHAR), CAST(t2 AS CHAR), CAST(t3 AS CHAR), CAST(t6 AS CHAR) "
                    f"FROM {schema}.times ORDER BY id")
        shown = cur.fetchall()

    def plain(text: str) -> str:  # the plugin writes no trailing zeros of a fraction
        return text.rstrip("0").rstrip(".") if "." in text else text

    got = [m["values"] for m in drain(b, len(TIME_VALUES))]
    assert [[v["t0"], v["t2"], v["t3"], v["t6"]] for v in got] == [[plain(t) for t in row] for row in shown]
