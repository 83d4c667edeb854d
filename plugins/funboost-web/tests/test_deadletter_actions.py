"""Dead-letter actions of the manager: a bad request is a 400 that strands nothing, every error of a scan
hands back the messages it holds, and a bulk action never runs on more messages than were confirmed."""
from __future__ import annotations

import pytest

from conftest import add_dead_letters, csrf_of, known_queue, login, operator_headers

from funboost.admin import DeadLetterFilter
from funboost.admin.deadletters import DeadLetterFilter as _Filter


def _count(admin, q, **flt) -> int:
    return admin.dead_letters(q, "count", DeadLetterFilter(**flt)).matched


@pytest.mark.parametrize("body", [
    {"action": "retry", "text": 5},
    {"action": "retry", "reason": ["x"]},
    {"action": "delete", "text": {"a": 1}},
    {"action": "retry", "task_ids": 5},
    {"action": "retry", "task_ids": [[1]]},
    {"action": "retry", "task_ids": [1, 2]},
    {"action": "retry", "task_ids": "t1", "edit": 5},
    {"action": "retry", "task_ids": "t1", "edit": "[1]"},
    {"action": "retry", "task_ids": "t1", "edit": "{not json"},
    {"action": ["retry"]},
    {"action": "retry", "confirm": True},
    {"action": "retry", "confirm": "yes"},
    {"action": "retry", "confirm": 1.5},
    {"action": "retry", "confirm": -1},
    {"action": "retry", "confirm": [5]},
])
def test_bad_requests_are_400_and_hide_no_dead_letter(web, qname_web, body):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": i} for i in range(5)])
    hdr = operator_headers(client, names)
    r = client.post(f"/api/deadletters/{q}", json=body, headers=hdr)
    assert r.status_code == 400 and r.json()["error"], (r.status_code, r.text)
    assert _count(admin, q) == 5  # nothing was taken out of the dead-letter queue and left in flight
    assert client.get(f"/api/deadletters/{q}").json()["matched"] == 5


def test_edit_is_accepted_as_an_object_or_its_json_text(web, qname_web):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    t1, t2 = add_dead_letters(admin, q, [{"n": 1}, {"n": 2}])
    hdr = operator_headers(client, names)
    for tid, edit in ((t1, {"n": 10}), (t2, '{"n": 20}')):
        r = client.post(f"/api/deadletters/{q}", json={"action": "retry", "task_ids": [tid], "edit": edit,
                                                        "confirm": 1}, headers=hdr)
        assert r.status_code == 200 and r.json()["matched"] == 1, r.text
    ready = admin.broker(q).fetch(10, 1.0)
    from funboost.message import loads
    assert sorted(loads(d.body)["n"] for d in ready) == [10, 20]
    admin.broker(q).ack(ready)


@pytest.mark.parametrize("failure", ["filter", "publish", "ack"])
def test_a_scan_that_fails_hands_every_message_back(web, qname_web, monkeypatch, failure):
    """Whatever fails in the middle of a scan (a filter, the broker), the dead letters it had fetched go back
    to the dead-letter queue at once: none stays in flight under the manager."""
    client, admin, names = web
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": i} for i in range(5)])
    hdr = operator_headers(client, names)
    assert client.post(f"/api/deadletters/{q}", json={"action": "retry"}, headers=hdr).json()["matched"] == 5

    if failure == "filter":
        calls = []
        real = _Filter.matches

        def matches(self, env):  # the third message of the scan breaks the filter
            calls.append(1)
            if len(calls) == 3:
                raise TypeError("a filter that fails")
            return real(self, env)

        monkeypatch.setattr(_Filter, "matches", matches)
    else:
        target = admin.broker(q) if failure == "publish" else admin.broker(q).dead_letter_broker()

        def boom(*a, **k):
            raise ConnectionError(f"broker gone during {failure}")

        monkeypatch.setattr(target, failure, boom)
    from starlette.testclient import TestClient
    raw = TestClient(client.app, base_url="http://127.0.0.1", raise_server_exceptions=False, cookies=client.cookies)
    r = raw.post(f"/api/deadletters/{q}", json={"action": "retry", "confirm": 5}, headers=hdr)
    assert r.status_code == 500
    monkeypatch.undo()
    # every one is back and visible; the publish and filter failures retried none (the ack one may have)
    assert _count(admin, q) == 5
    if failure != "ack":
        assert admin.broker(q).queue_size().ready == 0


def test_bulk_action_needs_the_previewed_count_and_never_runs_on_more(web, qname_web):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": i} for i in range(8)], reason="zero a")
    hdr = operator_headers(client, names)
    url = f"/api/deadletters/{q}"
    preview = client.post(url, json={"action": "retry", "reason": "zero"}, headers=hdr).json()
    assert preview["preview"] is True and preview["matched"] == 8
    add_dead_letters(admin, q, [{"n": 99}], reason="zero a")  # one more arrives after the preview
    stale = client.post(url, json={"action": "retry", "reason": "zero", "confirm": 8}, headers=hdr)
    assert stale.status_code == 409 and stale.json()["matched"] == 9 and "9" in stale.json()["error"]
    assert _count(admin, q) == 9 and admin.broker(q).queue_size().ready == 0  # nothing ran
    ok = client.post(url, json={"action": "retry", "reason": "zero", "confirm": 9}, headers=hdr)
    assert ok.status_code == 200 and ok.json()["matched"] == 9
    assert _count(admin, q) == 0 and admin.broker(q).queue_size().ready == 9


def test_a_dead_letter_arriving_while_the_action_runs_is_not_acted_on(web, qname_web, monkeypatch):
    """The count is checked, then the action runs: one that arrives in between is left alone (the action
    runs on at most the confirmed number)."""
    client, admin, names = web
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": i} for i in range(4)])
    hdr = operator_headers(client, names)
    real = type(admin).dead_letters

    def dead_letters(self, queue, action, *a, **k):
        if action != "count":  # right after the recount of the confirmed request
            add_dead_letters(admin, q, [{"n": 100}])
        return real(self, queue, action, *a, **k)

    monkeypatch.setattr(type(admin), "dead_letters", dead_letters)
    r = client.post(f"/api/deadletters/{q}", json={"action": "delete", "confirm": 4}, headers=hdr)
    monkeypatch.undo()
    assert r.status_code == 200 and r.json()["matched"] == 4
    assert _count(admin, q) == 1  # the late one is still there


def test_bulk_action_through_the_pages_asks_again_when_the_count_changed(web, qname_web):
    client, admin, names = web
    q = known_queue(admin, qname_web)
    add_dead_letters(admin, q, [{"n": i} for i in range(2)], reason="zero a")
    login(client, names["operator"])
    tok = csrf_of(client.get("/queues").text)
    page = client.post(f"/deadletters/{q}", data={"csrf": tok, "action": "retry", "reason": "zero", "text": ""})
    assert page.status_code == 200 and 'name="confirm" value="2"' in page.text
    add_dead_letters(admin, q, [{"n": 33}], reason="zero a")
    again = client.post(f"/deadletters/{q}", data={"csrf": tok, "action": "retry", "reason": "zero", "text": "",
                                                    "confirm": "2"}, follow_redirects=False)
    assert again.status_code == 409 and 'name="confirm" value="3"' in again.text and "changed" in again.text
    assert _count(admin, q) == 3
    done = client.post(f"/deadletters/{q}", data={"csrf": tok, "action": "retry", "reason": "zero", "text": "",
                                                   "confirm": "3"}, follow_redirects=False)
    assert done.status_code == 303 and _count(admin, q) == 0
