import os
import re
import tempfile
import uuid

import pytest

# a data directory of this test session: the sqlite state backend and the sqlite broker live there
_tmp = tempfile.mkdtemp(prefix="funboost-web-tests-")
os.environ.setdefault("FUNBOOST_DATA_DIR", _tmp)
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")
os.environ.setdefault("FUNBOOST_HEARTBEAT_INTERVAL", "1")  # "applied on N of M" within a second or two

from funboost.admin import QueueAdmin  # noqa: E402
from funboost.state.base import get_state_backend, resolve_state_backend_class  # noqa: E402
from funboost.testing import require_service  # noqa: E402

PASSWORD = "correct horse battery"


def state_backend(name: str):
    reason = resolve_state_backend_class(name).check_available(None)
    if reason:
        require_service(reason)
    return get_state_backend(name)


@pytest.fixture(params=["sqlite", "redis"])
def backend_name(request):
    return request.param


@pytest.fixture
def web(backend_name):
    """(TestClient, admin, users by role) on a state backend; users with unique names (the redis state
    backend is shared by every test run on this machine)."""
    from starlette.testclient import TestClient

    from funboost_web.app import WebConfig, create_app
    from funboost_web.auth import UserStore
    state = state_backend(backend_name)
    admin = QueueAdmin(state)
    users = UserStore(state)
    tag = uuid.uuid4().hex[:8]
    names = {role: f"{role}_{tag}" for role in ("viewer", "operator", "admin")}
    for role, name in names.items():
        users.set_user(name, PASSWORD, role)
    app = create_app(WebConfig(admin))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, admin, names
    for name in names.values():
        users.delete_user(name)
    admin.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, name: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"username": name, "password": password, "csrf": csrf_of(page.text),
                                       "next": "/queues"}, follow_redirects=False)


# ---------------------------------------------------------------- consumer processes and a live server
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).parent


def broker_available(kind: str) -> None:
    from funboost.plugins.manager import resolve_broker_kind
    cls = resolve_broker_kind(kind)
    reason = cls.check_available(cls.options_model())
    if reason:
        require_service(reason)


class ConsumerProcess:
    def __init__(self, kind: str, backend: str) -> None:
        broker_available(kind)
        self.prefix = f"web{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "FUNBOOST_STATE_BACKEND": backend}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "consumer_app.py"), kind, self.prefix],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert "consuming" in line, f"consumer process did not start ({self.proc.poll()})"

    def q(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait(10)


def publish_many(admin: QueueAdmin, queue: str, kwargs_list: list) -> list:
    """Publish in one broker call (the admin layer builds the broker from the catalog)."""
    from funboost.message import build_envelope, dumps
    from funboost.plugins.broker import OutgoingMessage
    envs = [build_envelope(kw) for kw in kwargs_list]
    admin.broker(queue).publish([OutgoingMessage(body=dumps(e), task_id=e["extra"]["task_id"]) for e in envs])
    return [e["extra"]["task_id"] for e in envs]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LiveServer:
    """The manager on uvicorn in a thread of the test process, on a free loopback port."""

    def __init__(self, admin: QueueAdmin) -> None:
        import uvicorn

        from funboost_web.app import WebConfig, create_app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(WebConfig(admin)), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        from funboost.testing import wait_until
        wait_until(lambda: self.server.started, timeout=20)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def qname_web(request):
    return f"web_{request.node.name[:30]}_{uuid.uuid4().hex[:8]}".replace("[", "_").replace("]", "_")


# ---------------------------------------------------------------- queues known to the catalog, dead letters
def route_template(route) -> str:
    """A route's path with its parameters written without convertors: ``{queue:segment}`` -> ``{queue}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)


def known_queue(admin: QueueAdmin, queue: str, kind: str = "sqlite") -> str:
    """Give ``queue`` a catalog record (what a consumer writes when it starts): the manager then knows it
    and builds its broker, with no consumer running."""
    from funboost.admin.catalog import CATALOG
    admin.state.doc_put(CATALOG, queue, {"queue": queue, "broker_kind": kind, "broker_options": {}})
    return queue


def add_dead_letters(admin: QueueAdmin, queue: str, kwargs_list: list, reason: str = "upstream timeout") -> list:
    """Put messages straight into ``queue``'s dead-letter queue, as the engine does after the last retry."""
    from funboost.message import build_envelope, dumps
    from funboost.plugins.broker import OutgoingMessage, annotate_dead_letter
    envs = [build_envelope(kw) for kw in kwargs_list]
    admin.broker(queue).dead_letter_broker().publish(
        [OutgoingMessage(body=annotate_dead_letter(dumps(e), reason), task_id=e["extra"]["task_id"]) for e in envs])
    return [e["extra"]["task_id"] for e in envs]


def operator_headers(client, names: dict, role: str = "operator") -> dict:
    """Log ``client`` in with the user of ``role``; the CSRF header its state changes need."""
    login(client, names[role])
    return {"X-CSRF-Token": csrf_of(client.get("/queues").text)}
