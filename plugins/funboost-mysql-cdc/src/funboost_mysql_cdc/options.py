"""``broker_exclusive_config`` of the ``MYSQL_CDC`` kind, with environment-variable fallbacks.

Connection settings come from the options first, then from environment variables, then from loopback
defaults. Nothing is read from a file in the user's project.

=================  ==============================  ==============
option             environment variable            default
=================  ==============================  ==============
``host``           FUNBOOST_MYSQL_CDC_HOST         ``127.0.0.1``
``port``           FUNBOOST_MYSQL_CDC_PORT         ``3306``
``user``           FUNBOOST_MYSQL_CDC_USER         ``root``
``password``       FUNBOOST_MYSQL_CDC_PASSWORD     empty
``server_id``      FUNBOOST_MYSQL_CDC_SERVER_ID    derived from the queue name
=================  ==============================  ==============
"""
from __future__ import annotations

import os
import zlib
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from funboost.plugins.broker import BrokerOptions

RowEvent = Literal["insert", "update", "delete"]
ALL_EVENTS: tuple[RowEvent, ...] = ("insert", "update", "delete")

_ENV = {
    "host": "FUNBOOST_MYSQL_CDC_HOST",
    "port": "FUNBOOST_MYSQL_CDC_PORT",
    "user": "FUNBOOST_MYSQL_CDC_USER",
    "password": "FUNBOOST_MYSQL_CDC_PASSWORD",
    "server_id": "FUNBOOST_MYSQL_CDC_SERVER_ID",
}
_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


class MysqlCdcOptions(BrokerOptions):
    """Options of the ``MYSQL_CDC`` kind (``BoosterParams(broker_exclusive_config={...})``)."""

    # --- connection (None = environment variable, then loopback default) ---
    host: Optional[str] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    user: Optional[str] = None
    password: Optional[str] = None
    # the replica id this reader registers with; unique among the server's replicas. None: the env
    # variable, else a stable number derived from the queue name
    server_id: Optional[int] = Field(default=None, ge=1, le=2**32 - 1)
    connect_timeout: float = Field(default=10.0, gt=0)

    # --- what to watch (empty include list = everything) ---
    schemas: list[str] = Field(default_factory=list)
    exclude_schemas: list[str] = Field(default_factory=list)
    # "table" (any schema) or "schema.table"
    tables: list[str] = Field(default_factory=list)
    exclude_tables: list[str] = Field(default_factory=list)
    events: list[RowEvent] = Field(default_factory=lambda: list(ALL_EVENTS))
    exclude_events: list[RowEvent] = Field(default_factory=list)

    # --- where the first run starts (later runs resume from the checkpoint) ---
    # "now": the server's current binlog end; "position": start_log_file + start_log_pos;
    # "gtid": start_gtid_set (MySQL: an executed GTID set; MariaDB: a gtid_slave_pos-style list)
    start: Literal["now", "position", "gtid"] = "now"
    start_log_file: Optional[str] = None
    start_log_pos: Optional[int] = Field(default=None, ge=4)
    start_gtid_set: Optional[str] = None
    # which GTID dialect "gtid" speaks; "auto" asks the server
    flavor: Literal["auto", "mysql", "mariadb"] = "auto"

    # --- checkpoint and coordination (the state backend) ---
    # None: FUNBOOST_STATE_BACKEND, else sqlite (the engine's default). Set it to the booster's
    # state_backend when that is not the default.
    state_backend: Optional[str] = None
    # one process per queue reads the binlog (a lock in the state backend); a reader that dies without
    # releasing it is replaced after this many seconds (at once when it ran on this host)
    reader_lock_ttl: float = Field(default=30.0, ge=2.0)

    # --- reading ---
    # "process" (default): the binlog is decoded in a child process (python -m
    # funboost_mysql_cdc.reader_process), beside the engine rather than under its GIL; "thread": in a thread
    # of the consumer's process (for interpreters that cannot start a child, e.g. an embedded one)
    reader: Literal["process", "thread"] = "process"
    # decoded rows held ahead of the engine (backpressure: the reader waits when this many are unread)
    buffer_rows: int = Field(default=2000, ge=1)
    # the server sends a heartbeat this often when idle, so a dead connection is noticed
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    reconnect_backoff_initial: float = Field(default=0.2, gt=0)
    reconnect_backoff_max: float = Field(default=10.0, gt=0)

    # --- dead letters (a binlog cannot be written): kind and options of the <queue>_dlx queue ---
    dead_letter_kind: str = "sqlite"
    dead_letter_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "MysqlCdcOptions":
        if self.start == "position" and (self.start_log_file is None or self.start_log_pos is None):
            raise ValueError("start='position' needs start_log_file and start_log_pos")
        if self.start == "gtid" and not self.start_gtid_set:
            raise ValueError("start='gtid' needs start_gtid_set")
        if self.start != "position" and (self.start_log_file is not None or self.start_log_pos is not None):
            raise ValueError("start_log_file / start_log_pos are only used with start='position'")
        if self.start != "gtid" and self.start_gtid_set is not None:
            raise ValueError("start_gtid_set is only used with start='gtid'")
        if not self.watched_events():
            raise ValueError(f"no row event left to watch (events={self.events}, exclude_events={self.exclude_events})")
        for name in (*self.tables, *self.exclude_tables):
            if not name or name.count(".") > 1:
                raise ValueError(f"table {name!r}: expected 'table' or 'schema.table'")
        return self

    def resolved(self, name: str) -> Any:
        """The option's value, else its environment variable, else the default."""
        value = getattr(self, name)
        if value is None and name in _ENV:
            raw = os.environ.get(_ENV[name])
            if raw:
                value = int(raw) if name in ("port", "server_id") else raw
        if value is None:
            value = _DEFAULTS.get(name)
        return value

    def server_id_for(self, queue_name: str) -> int:
        sid = self.resolved("server_id")
        if sid is not None:
            return int(sid)
        # stable per queue, away from the small ids servers are usually given
        return 100_000 + zlib.crc32(queue_name.encode("utf-8")) % 2_000_000_000

    def connection_settings(self) -> dict[str, Any]:
        """PyMySQL connect() keyword arguments."""
        return {"host": self.resolved("host"), "port": int(self.resolved("port")),
                "user": self.resolved("user"), "passwd": self.resolved("password") or "",
                "connect_timeout": self.connect_timeout}

    def watched_events(self) -> frozenset[str]:
        return frozenset(self.events) - frozenset(self.exclude_events)
