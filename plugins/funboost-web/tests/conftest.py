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
