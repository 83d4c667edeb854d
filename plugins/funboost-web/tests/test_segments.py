"""Queue names, task ids and job ids holding "/" (or "%") in the manager's URLs: the pages link to them
percent-encoded, and the routes must hand the handlers the name as it is (before, a queue named "a/b" was
listed but its pages answered 404)."""
from __future__ import annotations

import uuid
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings, strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import add_dead_letters, csrf_of, known_queue, operator_headers

from funboost_web.segments import KeepEncodedSlashes


def _echo_app() -> Starlette:
    async def echo(request):
        return JSONResponse({"name": request.path_params["name"], "tail": request.path_params["tail"]})
    return Starlette(routes=[Route("/q/{name:segment}/{tail}", echo)], middleware=[Middleware(KeepEncodedSlashes)])


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s and s not in (".", "..")))
def test_any_name_comes_back_as_it_was_linked(name):
    # ("." and ".." are dot segments: clients remove them from any URL, encoded or not)
    with TestClient(_echo_app()) as client:
        r = client.get(f"/q/{quote(name, safe='')}/end")
        assert r.status_code == 200, (name, r.status_code)
        assert r.json() == {"name": name, "tail": "end"}


def test_paths_without_an_encoded_slash_are_untouched():
    with TestClient(_echo_app()) as client:
        assert client.get("/q/plain%20name/end").json()["name"] == "plain name"
        assert client.get("/q/a/b/end").status_code == 404  # a real "/" still separates segments


@pytest.mark.parametrize("backend_name", ["sqlite"])
def test_a_queue_named_with_a_slash_has_working_pages_and_api(web):
    client, admin, names = web
    tag = uuid.uuid4().hex[:8]
    q = known_queue(admin, f"team/{tag}/work")
    odd = known_queue(admin, f"odd%2F{tag}")  # the text "%2F" in a name is not a "/"
    enc = quote(q, safe="")
    hdr = operator_headers(client, names)
    assert f'href="/queues/{enc}"' in client.get("/queues").text
    page = client.get(f"/queues/{enc}")
    assert page.status_code == 200 and q in page.text
    assert client.get(f"/api/queues/{enc}").json()["record"]["queue"] == q
    assert client.get(f"/api/queues/{quote(odd, safe='')}").json()["record"]["queue"] == odd
    r = client.post(f"/api/queues/{enc}/pause", json={}, headers=hdr)
    assert r.status_code == 200 and r.json()["queue"] == q and admin.flags(q).get("pause")
    form = client.post(f"/queues/{enc}/action", data={"csrf": csrf_of(page.text), "action": "resume"},
                       follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"].endswith(f"/queues/{enc}")
    assert not admin.flags(q).get("pause")
    add_dead_letters(admin, q, [{"n": 1}])
    dl = client.get(f"/api/deadletters/{enc}")
    assert dl.status_code == 200, dl.text


def test_login_comes_back_to_the_page_of_a_queue_named_with_a_slash(web):
    client, admin, names = web
    q = known_queue(admin, f"team/{uuid.uuid4().hex[:8]}")
    enc = quote(q, safe="")
    r = client.get(f"/queues/{enc}", follow_redirects=False)
    assert r.status_code in (302, 303, 307) and "/login?next=" in r.headers["location"]
    nxt = r.headers["location"].split("next=", 1)[1]
    page = client.get("/login")
    done = client.post("/login", data={"username": names["viewer"], "password": "correct horse battery",
                                       "csrf": csrf_of(page.text), "next": unquote(nxt)},
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    again = client.get(done.headers["location"])
    assert again.status_code == 200 and q in again.text
