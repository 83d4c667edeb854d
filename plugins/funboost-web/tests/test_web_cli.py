"""Start-up errors of ``funboost web``: a port in use, a missing or unreadable certificate / key: one line on
stderr naming what is wrong, exit status 2, and nothing changed (the admin password is not reset)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from funboost.testing.tls import pki  # noqa: F401  (a throw-away CA and server certificate)
from funboost_web.auth import USERS, UserStore, verify_password

OLD, NEW = "old password 1", "new password 2"


@pytest.fixture
def state(tmp_path):
    from funboost.state.sqlite import SqliteStateBackend
    path = str(tmp_path / "s.sqlite3")
    st = SqliteStateBackend(path)
    UserStore(st).set_user("admin", OLD, "admin")
    env = {**os.environ, "FUNBOOST_STATE_BACKEND": "sqlite", "FUNBOOST_STATE_SQLITE_PATH": path}
    env.pop("FUNBOOST_WEB_ADMIN_PASSWORD", None)
    return st, env


def _web(env, *args):
    return subprocess.run([sys.executable, "-m", "funboost_web", "--admin-password", NEW, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "serving" not in r.stdout, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("funboost web: error: "), r.stderr
    return lines[0]


def _admin_password_unchanged(st):
    assert verify_password(OLD, st.doc_get(USERS, "admin")["hash"])


def test_port_in_use(state):
    st, env = state
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        line = _one_line_error(_web(env, "--port", str(port)))
    finally:
        busy.close()
    assert f"127.0.0.1:{port}" in line and "in use" in line, line
    _admin_password_unchanged(st)


@pytest.mark.parametrize("which", ["certfile", "keyfile", "both"])
def test_missing_certificate_or_key_file(state, pki, which):  # noqa: F811
    st, env = state
    cert = "/nonexist.pem" if which in ("certfile", "both") else pki["server.pem"]
    key = "/nonexist.key" if which in ("keyfile", "both") else pki["server.key"]
    line = _one_line_error(_web(env, "--port", "18301", "--certfile", cert, "--keyfile", key))
    missing = "/nonexist.pem" if which != "keyfile" else "/nonexist.key"
    assert missing in line and "--" + ("certfile" if which != "keyfile" else "keyfile") in line, line
    _admin_password_unchanged(st)


def test_a_file_that_is_no_certificate(state, tmp_path):
    st, env = state
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    line = _one_line_error(_web(env, "--port", "18302", "--certfile", str(junk), "--keyfile", str(junk)))
    assert str(junk) in line, line
    _admin_password_unchanged(st)
