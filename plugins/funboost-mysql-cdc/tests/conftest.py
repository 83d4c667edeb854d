"""Fixtures: the project's own MariaDB with ROW binlog (scripts/mariadb_cdc_service.sh, port 3307)."""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable

import pymysql
import pytest

from funboost.testing import require_available
from funboost_mysql_cdc.broker import MysqlCdcBroker
from funboost_mysql_cdc.options import MysqlCdcOptions

PORT = int(os.environ.get("FUNBOOST_MARIADB_CDC_PORT", "3307"))
CONN = {"host": "127.0.0.1", "port": PORT, "user": "root", "password": ""}


def connect(**kw) -> pymysql.connections.Connection:
    return pymysql.connect(**{**CONN, "autocommit": True, **kw})


def wait_for(cond: Callable[[], bool], deadline_s: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for: {what}")
        time.sleep(poll)


@pytest.fixture(scope="session")
def mariadb_available() -> None:
    require_available(MysqlCdcBroker, MysqlCdcOptions(**CONN), "; run scripts/mariadb_cdc_service.sh")


@pytest.fixture
def schema(mariadb_available):
    """A fresh database with table ``items``; dropped afterwards."""
    name = f"cdc_{uuid.uuid4().hex[:10]}"
    with connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.items (id INT PRIMARY KEY, name VARCHAR(50), "
                    f"amount DECIMAL(10,2), created DATETIME, data BLOB) ENGINE=InnoDB")
        cur.execute(f"CREATE TABLE {name}.other (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    yield name
    with connect() as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def queue_name() -> str:
    return f"fbcdc_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brokers(mariadb_available):
    made: list[MysqlCdcBroker] = []

    def make(queue: str, **kw) -> MysqlCdcBroker:
        b = MysqlCdcBroker(queue, MysqlCdcOptions(**{**CONN, **kw}))
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def drain(broker: MysqlCdcBroker, n: int, deadline_s: float = 30, ack: bool = True) -> list:
    """Fetch until ``n`` deliveries arrived (acking them); returns their decoded bodies."""
    import json
    got: list = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {n} row changes")
        ds = broker.fetch(min(500, n - len(got)), 0.5)
        got.extend(json.loads(d.body) for d in ds)
        if ack and ds:
            broker.ack(ds)
    return got
