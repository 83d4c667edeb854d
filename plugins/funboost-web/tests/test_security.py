"""Security of the web manager: authentication on every route, CSRF, roles, tokens, login rate limiting,
hashed credentials, first-start admin, loopback bind."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

from starlette.routing import Route

from conftest import PASSWORD, csrf_of, known_queue, login, route_template

from funboost_web.auth import USERS, UserStore, hash_password, verify_password


def _routes(client, q="q"):
    out = []
    for r in client.app.routes:
        if isinstance(r, Route) and r.path not in ("/", "/healthz", "/login"):
            for m in sorted(r.methods - {"HEAD"}):
                out.append((m, route_template(r).replace("{queue}", q).replace("{task_id}", "t").replace("{kind}", "sqlite")
                            .replace("{job_id}", "j").replace("{action}", "pause")))
    return out


def test_every_route_needs_authentication(web):
    client, _, _ = web
    routes = _routes(client)
    assert len(routes) > 30
    for method, path in routes:
        r = client.request(method, path, follow_redirects=False)
        if path.startswith("/api/") or path == "/metrics":
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, r.status_code)
    assert client.get("/static/app.js").status_code == 200  # assets are public


def test_login_logout_and_post_without_csrf(web):
    client, admin, names = web
    assert login(client, names["operator"]).status_code == 303
    page = client.get("/queues")
    assert page.status_code == 200 and names["operator"] in page.text
    # a state change without the CSRF token, or with a wrong one: 403, nothing changes
    q = known_queue(admin, f"csrf_probe_{uuid.uuid4().hex[:8]}")
    assert client.post(f"/queues/{q}/action", data={"action": "pause"}).status_code == 403
    assert client.post(f"/queues/{q}/action", data={"action": "pause", "csrf": "forged"}).status_code == 403
    assert client.post(f"/api/queues/{q}/pause", json={}).status_code == 403
    assert admin.flags(q).get("pause") is None
    ok = client.post(f"/queues/{q}/action", data={"action": "pause", "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert ok.status_code == 303 and admin.flags(q)["pause"] is True
    r = client.post(f"/api/queues/{q}/resume", json={}, headers={"X-CSRF-Token": csrf_of(page.text)})
    assert r.status_code == 200 and admin.flags(q)["pause"] is False
    assert client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    assert client.get("/queues", follow_redirects=False).status_code == 303


def test_viewer_cannot_change_anything(web):
    client, admin, names = web
    login(client, names["viewer"])
    page = client.get("/queues")
    assert page.status_code == 200
    token = csrf_of(page.text)
    q = f"viewer_probe_{uuid.uuid4().hex[:8]}"
    for method, path in _routes(client, q):
        if method != "POST" or path == "/logout":
            continue
        r = client.post(path, data={"csrf": token, "action": "pause", "queue": q, "value": "1"}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    assert admin.flags(q).get("pause") is None


def test_bearer_tokens_created_and_revoked_by_an_admin(web):
    client, admin, names = web
    login(client, names["admin"])
    page = client.get("/admin/users")
    assert page.status_code == 200
    r = client.post("/admin/users", data={"csrf": csrf_of(page.text), "action": "create_token", "name": "ci",
                                          "role": "operator"}, follow_redirects=True)
    token = r.text.split('id="new-token">')[1].split("<")[0]
    client.cookies.clear()
    hdr = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/queues", headers=hdr).status_code == 200
    # a token carries no cookie: no CSRF needed, the role still applies
    tokq = known_queue(admin, f"tokq_{uuid.uuid4().hex[:8]}")
    assert client.post(f"/api/queues/{tokq}/pause", json={}, headers=hdr).status_code == 200
    assert admin.flags(tokq)["pause"] is True
    assert client.get("/api/queues", headers={"Authorization": "Bearer fbw_wrong"}).status_code == 401
    assert client.get("/metrics", headers=hdr).status_code == 200
    # the token is stored as its hash only
    users = UserStore(admin.state)
    stored = json.dumps(admin.state.doc_list("web_tokens"))
    assert token not in stored
    tid = [t for t in users.tokens() if t["name"] == "ci"][0]["id"]
    login(client, names["admin"])
    page = client.get("/admin/users")
    client.post("/admin/users", data={"csrf": csrf_of(page.text), "action": "revoke_token", "id": tid})
    client.cookies.clear()
    assert client.get("/api/queues", headers=hdr).status_code == 401
    # an operator cannot create tokens
    login(client, names["operator"])
    page = client.get("/queues")
    assert client.post("/admin/users", data={"csrf": csrf_of(page.text), "action": "create_token", "name": "x",
                                             "role": "admin"}).status_code == 403


def test_wrong_passwords_are_rate_limited(web):
    client, _, names = web
    for _ in range(5):
        assert login(client, names["viewer"], "wrong password").status_code == 401
    r = login(client, names["viewer"], PASSWORD)  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_credentials_are_stored_hashed(web):
    _, admin, names = web
    doc = admin.state.doc_get(USERS, names["admin"])
    assert PASSWORD not in json.dumps(doc) and doc["hash"].startswith("scrypt$32768$8$1$")
    assert verify_password(PASSWORD, doc["hash"]) and not verify_password("nope", doc["hash"])
    h1, h2 = hash_password("same"), hash_password("same")
    assert h1 != h2  # salted


def test_session_cookie_is_signed(web):
    client, _, names = web
    login(client, names["viewer"])
    cookie = client.cookies.get("funboost_web")
    assert cookie and client.get("/queues", follow_redirects=False).status_code == 200
    client.cookies.clear()  # (set() alone adds a second cookie beside the first with httpx2's client)
    client.cookies.set("funboost_web", cookie[:-4] + "AAAA")
    assert client.get("/queues", follow_redirects=False).status_code == 303


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _run_cli(args, env_extra, timeout=30):
    env = {**os.environ, **env_extra}
    p = subprocess.Popen([sys.executable, "-m", "funboost_web", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if "serving" in line:
                break
    finally:
        p.terminate()
        _, err = p.communicate(timeout=timeout)
    return "".join(lines), err


def test_first_start_prints_the_admin_password_once_and_binds_loopback(tmp_path):
    env = {"FUNBOOST_STATE_BACKEND": "sqlite", "FUNBOOST_STATE_SQLITE_PATH": str(tmp_path / "s.sqlite3")}
    out, err = _run_cli(["--port", str(_free_port())], env)
    assert "created the user 'admin' with the password: " in out, (out, err)
    pw = out.split("password: ")[1].split()[0]
    assert "http://127.0.0.1:" in out and "WARNING" not in err
    from funboost.state.sqlite import SqliteStateBackend
    doc = SqliteStateBackend(str(tmp_path / "s.sqlite3")).doc_get(USERS, "admin")
    assert pw not in json.dumps(doc) and verify_password(pw, doc["hash"])
    out2, _ = _run_cli(["--port", str(_free_port())], env)  # the second start prints no password
    assert "password" not in out2 and "serving" in out2


def test_non_loopback_without_tls_warns_and_bad_args_exit_2(tmp_path):
    env = {"FUNBOOST_STATE_BACKEND": "sqlite", "FUNBOOST_STATE_SQLITE_PATH": str(tmp_path / "s.sqlite3"),
           "FUNBOOST_WEB_ADMIN_PASSWORD": "from the environment"}
    out, err = _run_cli(["--host", "0.0.0.0", "--port", str(_free_port())], env)
    assert "WARNING: listening on 0.0.0.0 without TLS" in err and "password:" not in out
    r = subprocess.run([sys.executable, "-m", "funboost_web", "--port", "notanumber"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("funboost web: error:")
    # the contract with core's `funboost web ...`: main(argv) returns the status, never raises SystemExit
    from funboost_web.cli import main
    assert main(["--port", "notanumber"]) == 2 and main(["--help"]) == 0


def test_out_of_range_port_is_an_error_not_a_wrapped_port(capsys):
    """--port 99999 was bound as 34463 (99999 % 65536) and served there."""
    from funboost_web.cli import main
    for bad in ("99999", "65536", "-1"):
        assert main(["--port", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("funboost web: error:") and "0..65535" in err and err.count("\n") == 1


def test_stored_values_are_escaped_and_scripts_only_come_from_static(web):
    client, admin, names = web
    from funboost.admin.catalog import CATALOG
    evil = f"<script>alert('{uuid.uuid4().hex[:6]}')</script>"
    admin.state.doc_put(CATALOG, evil, {"queue": evil, "broker_kind": "sqlite", "broker_options": {},
                                        "function": "<img src=x onerror=alert(1)>"})
    try:
        login(client, names["viewer"])
        page = client.get("/queues")
        assert page.status_code == 200 and evil not in page.text and "&lt;script&gt;alert(" in page.text
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers scripts
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["x-frame-options"] == "DENY"
    finally:
        admin.forget(evil)


from funboost.testing.tls import pki  # noqa: E402,F401  (the module's throw-away CA and server certificate)


def test_tls_serving_with_certfile_and_keyfile(tmp_path, pki):  # noqa: F811
    """--certfile/--keyfile: the manager speaks HTTPS with that certificate (verified against its CA), the
    login page is served over it, and a plain-HTTP client gets nothing."""
    import ssl
    import urllib.error
    import urllib.request

    from funboost.testing import wait_until

    port = _free_port()
    env = {**os.environ, "FUNBOOST_STATE_BACKEND": "sqlite", "FUNBOOST_STATE_SQLITE_PATH": str(tmp_path / "s.sqlite3"),
           "FUNBOOST_WEB_ADMIN_PASSWORD": "from the environment"}
    p = subprocess.Popen([sys.executable, "-m", "funboost_web", "--port", str(port), "--certfile", pki["server.pem"],
                          "--keyfile", pki["server.key"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])

    def https_get(path: str):
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5) as r:
                return r.status, r.read()
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    try:
        status, _ = wait_until(lambda: https_get("/healthz"), 30, message="the HTTPS manager answers")
        assert status == 200
        status, body = https_get("/login")
        assert status == 200 and b"password" in body.lower()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:  # plain HTTP gets no page
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                reply = plain.recv(4096)
            except OSError:
                reply = b""
            assert b"HTTP/1.1 200" not in reply
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    assert f"https://127.0.0.1:{port}/" in out, (out, err)
