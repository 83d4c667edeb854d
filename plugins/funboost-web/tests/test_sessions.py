"""Sessions end on the server at logout: the saved cookie (with its CSRF token) changes nothing afterwards,
and logging out in one browser leaves the user's other sessions alone."""
from __future__ import annotations

from conftest import csrf_of, known_queue, login

from funboost_web.auth import SESSIONS


def _client(app):
    from starlette.testclient import TestClient
    return TestClient(app, base_url="http://127.0.0.1")


def test_a_logged_out_cookie_replayed_changes_nothing(web, qname_web):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    login(client, names["operator"])
    tok = csrf_of(client.get("/queues").text)
    saved = dict(client.cookies)
    assert client.post(f"/api/queues/{q}/pause", json={}, headers={"X-CSRF-Token": tok}).status_code == 200
    assert client.post("/logout", data={"csrf": tok}, follow_redirects=False).status_code == 303
    replay = _client(client.app)
    replay.cookies.update(saved)
    r = replay.post(f"/api/queues/{q}/resume", json={}, headers={"X-CSRF-Token": tok})
    assert r.status_code == 401, r.text
    assert admin.flags(q)["pause"] is True  # still paused: the replay did nothing
    assert replay.get("/queues", follow_redirects=False).status_code == 303  # pages: back to the login
    form = replay.post(f"/queues/{q}/action", data={"csrf": tok, "action": "resume"}, follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"].startswith("/login") and admin.flags(q)["pause"]


def test_logout_ends_only_that_session(web):
    client, admin, names = web
    other = _client(client.app)
    login(client, names["viewer"])
    login(other, names["viewer"])
    tok = csrf_of(client.get("/queues").text)
    assert client.post("/logout", data={"csrf": tok}, follow_redirects=False).status_code == 303
    assert other.get("/api/queues").status_code == 200  # the other browser stays logged in
    assert client.get("/api/queues").status_code == 401


def test_sessions_are_kept_server_side_without_the_session_id_in_clear(web):
    client, admin, names = web
    login(client, names["viewer"])
    mine = {k: v for k, v in admin.state.doc_list(SESSIONS).items() if v.get("user") == names["viewer"]}
    assert len(mine) == 1
    cookie = client.cookies.get("funboost_web")
    assert not any(key in cookie for key in mine)  # stored by a hash of the id, not the id itself
    admin.state.doc_delete(SESSIONS, next(iter(mine)))  # revoked on the server (any manager process)
    assert client.get("/api/queues").status_code == 401
