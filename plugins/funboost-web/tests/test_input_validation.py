"""Bad input is a 4xx answer with a message (JSON on the API), never a 500: every JSON route gets values of
the wrong type and out of range; queue controls refuse unknown queues and values that are not what they
say; scheduled-job actions are checked before any store is read."""
from __future__ import annotations

import json
import sys
import uuid

import pytest
from starlette.routing import Route

from conftest import add_dead_letters, csrf_of, known_queue, login, operator_headers, route_template

# each one is sent as the raw JSON text of a field's value
BAD_VALUES = ['5', '-1', '0', 'null', 'true', '""', '"abc"', '"2030-01-01"', '"nan"', '1e999', '-1e999', '[1]', '[[1]]',
              '{"x": 1}', '2.7', '"' + "x" * 300 + '"']
BODY_FIELDS = ("action", "value", "queue", "kwargs", "args", "wait", "text", "reason", "task_ids", "edit", "confirm",
               "username", "password", "role", "name", "id", "back", "qps", "concurrency")
QUERY_FIELDS = ("queue", "limit", "before", "since", "until", "status", "text", "task_id", "host", "window", "search",
                "reason")
BAD_QUERY = ["0", "-1", "abc", "nan", "inf", "1e999", "2030-13-45", "|", "nan|x", "1|", "99999999999999999999999"]
# the routes that read a JSON body's fields / query parameters get every field with every value; the others
# (they read only their path) get a sample
READS_BODY = ("/api/queues/{queue}/{action}", "/api/deadletters/{queue}", "/api/publish", "/api/publish/{queue}",
              "/api/admin/users")
READS_QUERY = ("/api/results", "/api/series", "/api/deadletters/{queue}", "/api/consumers")


def _api_routes(app):
    for r in app.routes:
        if isinstance(r, Route) and r.path.startswith("/api/"):
            yield r


def _fill(path: str, q: str) -> list[str]:
    """The paths to try for a route: the known queue, an unknown one, and each action / job store."""
    if "{queue}" not in path:
        q = ""  # one path, not the same one twice
    out: list[str] = []
    for queue in (q, f"nope_{uuid.uuid4().hex[:6]}"):
        p = path.replace("{queue}", queue).replace("{task_id}", "t-1").replace("{job_id}", "j-1")
        kinds = ("sqlite", "redis", "bogus") if "{kind}" in p else ("",)
        for kind in kinds:
            pk = p.replace("{kind}", kind)
            actions = ("pause", "resume", "clear", "qps", "concurrency", "remove", "explode") if "{action}" in pk else ("",)
            out += [pk.replace("{action}", a) for a in actions]
    return list(dict.fromkeys(out))


def _check(r, what):
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("error"), str) and body["error"], (what, r.status_code, r.text[:300])


@pytest.mark.parametrize("backend_name", ["sqlite"])  # sqlite only: this creates users and queues
def test_every_json_route_answers_bad_input_with_a_4xx_json_message(web, qname_web, monkeypatch):
    client, admin, names = web
    monkeypatch.setattr(sys.modules["funboost_web.app"], "MAX_RPC_WAIT", 0.05, raising=False)  # a valid "wait": no time
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": 1}])
    hdr = operator_headers(client, names, "admin")
    tag = uuid.uuid4().hex[:6]
    before = set(client.app.state.users.users())
    routes = list(_api_routes(client.app))
    assert len(routes) >= 15
    sent = 0
    for route in routes:
        template = route_template(route)
        for path in _fill(template, q):
            if "GET" in route.methods:
                every = template in READS_QUERY
                for field in QUERY_FIELDS if every else QUERY_FIELDS[:2]:
                    for v in BAD_QUERY if every else BAD_QUERY[:3]:
                        _check(client.get(path, params={"queue": q, field: v}), ("GET", path, field, v))
                        sent += 1
            if "POST" in route.methods:
                for raw in (b'[1]', b'"x"', b'5', b'null', b'[' * 100_000 + b']' * 100_000,
                            b'{"a": ' * 50_000 + b'1' + b'}' * 50_000, b'{bad json', b'\xff\xfe'):
                    r = client.post(path, content=raw, headers={**hdr, "content-type": "application/json"})
                    _check(r, ("POST raw", path, raw[:20]))
                    assert r.status_code == 400, (path, raw[:20], r.status_code)
                every = template in READS_BODY
                for field in BODY_FIELDS if every else BODY_FIELDS[:2]:
                    for v in BAD_VALUES if every else BAD_VALUES[:3]:
                        # (set_user's password is too short unless it is the field tried: scrypt only then)
                        base = {"action": "set_user", "username": f"fuzz_{tag}", "password": "short",
                                "role": "viewer", "queue": q, "kwargs": {}, "wait": 0} if "users" in path else \
                            {"queue": q, "kwargs": {}, "wait": 0, "action": "retry"}
                        body = json.dumps(base)[:-1] + f', "{field}": {v}}}'
                        r = client.post(path, content=body, headers={**hdr, "content-type": "application/json"})
                        _check(r, ("POST", path, field, v))
                        sent += 1
    assert sent > 1500
    users = client.app.state.users
    for name in set(users.users()) - before:  # what the valid variants of set_user created
        users.delete_user(name)


REPORTED = [  # the audit's list: each was a 500
    ("GET", "/api/results?queue={q}&limit=0", None),
    ("GET", "/api/results?queue={q}&limit=-1", None),
    ("GET", "/api/deadletters/{q}?limit=abc", None),
    ("POST", "/api/publish", {"queue": "{q}", "kwargs": [1], "wait": 0}),
    ("POST", "/api/publish", {"queue": "{q}", "kwargs": {"x": 1}, "wait": [1]}),
    ("POST", "/api/publish", {"queue": 5, "kwargs": {"x": 1}, "wait": 0}),
    ("POST", "/api/deadletters/{q}", {"action": "retry", "task_ids": 5}),
    ("POST", "/api/deadletters/{q}", {"action": "retry", "task_ids": [[1]]}),
    ("POST", "/api/admin/users", {"action": "set_user", "username": "u2_{q}", "password": None, "role": "viewer"}),
    ("POST", "/api/admin/users", {"action": "set_user", "username": 5, "password": "12345678", "role": "viewer"}),
]


@pytest.mark.parametrize("method,path,body", REPORTED)
def test_reported_bad_requests_are_400(web, qname_web, method, path, body):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names, "admin")
    body = json.loads(json.dumps(body).replace("{q}", q)) if body else None
    r = client.request(method, path.replace("{q}", q), json=body, headers=hdr)
    assert r.status_code == 400 and r.json()["error"], r.text


def test_publish_wait_null_is_the_default_wait(web, qname_web, monkeypatch):
    client, admin, names = web
    monkeypatch.setattr(sys.modules["funboost_web.app"], "MAX_RPC_WAIT", 0.05)
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names)
    r = client.post("/api/publish", json={"queue": q, "kwargs": {"x": 1}, "wait": None}, headers=hdr)
    assert r.status_code == 200 and r.json()["task_id"] and r.json()["result"] is None


def test_results_page_with_a_bad_limit_is_a_400_page(web, qname_web):
    client, admin, names = web
    login(client, names["viewer"])
    for limit in ("0", "-1", "abc"):
        r = client.get(f"/results?queue={qname_web}&limit={limit}")
        assert r.status_code == 400 and "limit" in r.text


# ---------------------------------------------------------------- queue controls
@pytest.mark.parametrize("action,body", [("pause", {}), ("resume", {}), ("qps", {"value": 2}),
                                         ("concurrency", {"value": 2}), ("clear", {})])
def test_controls_of_an_unknown_queue_are_404_and_write_nothing(web, action, body):
    client, admin, names = web
    hdr = operator_headers(client, names)
    q = f"unknown_{uuid.uuid4().hex[:8]}"
    assert client.get(f"/api/queues/{q}").status_code == 404
    r = client.post(f"/api/queues/{q}/{action}", json=body, headers=hdr)
    assert r.status_code == 404 and q in r.json()["error"]
    assert admin.flags(q) == {}
    page = client.post(f"/queues/{q}/action", data={"csrf": hdr["X-CSRF-Token"], "action": action, "value": "2"},
                       follow_redirects=False)
    assert page.status_code == 404 and admin.flags(q) == {}


@pytest.mark.parametrize("raw", ['"2030-01-01"', 'true', 'false', '"nan"', '"inf"', '"Infinity"', '1e999', '-1e999',
                                 '-1', '"-0.5"', '"fast"', '[1]', '{"x": 1}', 'NaN'])
def test_qps_refuses_what_is_not_a_finite_rate(web, qname_web, raw):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names)
    r = client.post(f"/api/queues/{q}/qps", content='{"value": %s}' % raw,
                    headers={**hdr, "content-type": "application/json"})
    assert r.status_code == 400 and "qps" in r.json()["error"], r.text
    assert "qps" not in admin.flags(q)


@pytest.mark.parametrize("raw,expected", [("2.5", 2.5), ('"3"', 3.0), ("7", 7.0), ("null", None), ('"none"', None),
                                          ("0", None), ('""', None)])
def test_qps_takes_a_number_its_text_or_none(web, qname_web, raw, expected):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names)
    r = client.post(f"/api/queues/{q}/qps", content='{"value": %s}' % raw,
                    headers={**hdr, "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["result"] == expected, r.text
    assert admin.flags(q).get("qps") == expected


@pytest.mark.parametrize("raw", ["2.7", "true", "0", "-3", '"two"', '"2.5"', "null", "1e999", "[2]"])
def test_concurrency_refuses_what_is_not_a_positive_whole_number(web, qname_web, raw):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names)
    r = client.post(f"/api/queues/{q}/concurrency", content='{"value": %s}' % raw,
                    headers={**hdr, "content-type": "application/json"})
    assert r.status_code == 400 and "concurrency" in r.json()["error"], r.text
    assert "concurrent_num" not in admin.flags(q)
    ok = client.post(f"/api/queues/{q}/concurrency", json={"value": "3"}, headers=hdr)
    assert ok.status_code == 200 and admin.flags(q)["concurrent_num"] == 3


def test_unknown_action_is_400_before_the_queue_is_looked_up(web):
    client, admin, names = web
    hdr = operator_headers(client, names)
    r = client.post("/api/queues/whatever/explode", json={}, headers=hdr)
    assert r.status_code == 400 and "explode" in r.json()["error"]


def test_form_back_and_login_next_never_leave_the_site(web, qname_web):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    hdr = operator_headers(client, names)
    for back in ("https://evil.example/", "//evil.example", "/\\evil.example", ["/a", "/b"]):
        r = client.post(f"/queues/{q}/action", data={"csrf": hdr["X-CSRF-Token"], "action": "pause", "back": back},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/queues/{q}", (back, r.headers["location"])
    client.cookies.clear()
    page = client.get("/login")
    r = client.post("/login", data={"username": names["viewer"], "password": "correct horse battery",
                                    "csrf": csrf_of(page.text), "next": "/\\evil.example"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/queues"


# ---------------------------------------------------------------- scheduled jobs
def test_job_action_is_checked_before_the_store(web, qname_web):
    client, admin, names = web
    hdr = operator_headers(client, names)
    r = client.post(f"/api/jobs/redis/{qname_web}/x/explode", json={}, headers=hdr)
    assert r.status_code == 400 and "action must be pause, resume or remove" in r.json()["error"]
    r = client.post(f"/api/jobs/bogus/{qname_web}/x/pause", json={}, headers=hdr)
    assert r.status_code == 400 and "store kind" in r.json()["error"]


def test_jobs_without_sqlalchemy_say_what_to_install(web, qname_web, monkeypatch):
    """A plain install (no SQLAlchemy): the sqlite job store cannot be read. The jobs page says so once,
    naming the extra, instead of an ImportError per queue; an action on that store is a 503 naming it."""
    client, admin, names = web
    known_queue(admin, qname_web)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # import sqlalchemy fails, as without the package
    hdr = operator_headers(client, names)
    r = client.post(f"/api/jobs/sqlite/{qname_web}/any/pause", json={}, headers=hdr)
    assert r.status_code == 503 and "funboost-core[sqlalchemy]" in r.json()["error"], r.text
    listing = client.get("/api/jobs").json()
    assert not [s for s in listing["stores"] if s["kind"] == "sqlite"]
    assert "funboost-core[sqlalchemy]" in listing["unavailable"]["sqlite"]
    page = client.get("/jobs")
    assert page.status_code == 200 and "ImportError" not in page.text
    assert page.text.count("funboost-core[sqlalchemy]") == 1
