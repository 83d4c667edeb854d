from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator

import pytest

from funboost.testing.servers import PrivateServer
from funboost.testing.workers import ConsumerProcess

from .brokers import start_private_server

os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")


@pytest.fixture
def qname() -> str:
    """A queue name no other test (nor a helper running tests on the same servers) uses."""
    return f"rel_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_dir(tmp_path) -> str:
    d = tmp_path / "sqlite"
    d.mkdir()
    return str(d)


@pytest.fixture
def private_server() -> Iterator[Callable[..., PrivateServer]]:
    """``private_server(kind, host="127.0.0.1")``: a started server of the test's own for ``kind`` (see
    :func:`.brokers.start_private_server`); removed when the test ends."""
    servers: list[PrivateServer] = []

    def start(kind: str, host: str = "127.0.0.1") -> PrivateServer:
        server = start_private_server(kind, host)
        servers.append(server)  # cleaned up even when it fails to start
        server.start()
        return server

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def start_consumer(qname, tmp_path) -> Callable[..., ConsumerProcess]:
    """``start_consumer(kind, options, name, task_seconds, **kw)``: a consumer process of the test's queue on 8
    threads, recording into ``<tmp_path>/<name>.out`` (``kw``: the rest of :class:`ConsumerProcess`'s
    arguments). The test stops it (it reads the final runs after the stop)."""

    def start(kind: str, options: dict[str, Any], name: str, task_seconds: float, **kw: Any) -> ConsumerProcess:
        return ConsumerProcess(kind, qname, options, str(tmp_path / f"{name}.out"), concurrency=8,
                               task_seconds=task_seconds, **kw)

    return start
