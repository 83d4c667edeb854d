"""Shared helpers: the NATS URL under test (skip/fail when unreachable), a stream prefix of this test
session's own (every stream it made is deleted at the end), and a private nats-server for restart
tests (its own port and store directory, never the shared 4222)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator

import pytest

from funboost.testing import require_service

URL = os.environ.get("FUNBOOST_NATS_URL", "nats://127.0.0.1:4222")
# every stream this session makes starts with this prefix (set before any broker options are built)
SESSION_PREFIX = os.environ.setdefault("FUNBOOST_NATS_STREAM_PREFIX", f"fbt{uuid.uuid4().hex[:8]}_")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


async def _delete_streams(url: str, prefix: str) -> int:
    import nats
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        names = [s.config.name for s in await js.streams_info()]
        doomed = [n for n in names if n.startswith(prefix)]
        for n in doomed:
            await js.delete_stream(n)
        return len(doomed)
    finally:
        await nc.close()


def delete_streams(url: str, prefix: str) -> int:
    return asyncio.run(_delete_streams(url, prefix))


@pytest.fixture(scope="session", autouse=True)
def _cleanup_session_streams() -> Iterator[None]:
    yield
    try:
        delete_streams(URL, SESSION_PREFIX)
    except Exception:
        pass  # the server was unreachable: nothing was made


@pytest.fixture(scope="session")
def nats_url() -> str:
    from funboost_nats.runtime import check_reachable
    reason = check_reachable(URL, 2.0)
    if reason:
        require_service(reason)
    return URL


@pytest.fixture
def qname() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateNats:
    """A nats-server of our own with JetStream (file store in a temp dir), to kill and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="funboost-nats-test-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("private nats-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    if not os.path.exists(NATS_SERVER):
        require_service("nats-server binary not found (apt-get install nats-server)")
    n = PrivateNats()
    n.start()
    try:
        yield n
    finally:
        n.cleanup()
