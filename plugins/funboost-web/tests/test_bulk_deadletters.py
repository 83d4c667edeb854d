"""Bulk retry of 10,000 dead-lettered messages chosen by a filter, through the JSON API: a preview count
first, then the confirmed action; every message runs exactly once and the audit log has the entry."""
from __future__ import annotations

import collections
import threading

from conftest import csrf_of, login

from funboost import BoosterParams, boost
from funboost.admin import read_audit
from funboost.message import build_envelope, dumps
from funboost.plugins.broker import OutgoingMessage, annotate_dead_letter
from funboost.testing import wait_until

N = 10_000


def test_bulk_retry_of_10000_dead_letters_by_filter(web, backend_name, qname_web):
    client, admin, names = web
    runs: collections.Counter = collections.Counter()
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=qname_web, broker_kind="sqlite_queue", state_backend=backend_name,
                         log_to_console=False, concurrent_num=20))
    def job(n: int):
        with lock:
            runs[n] += 1

    dlx = job.broker.dead_letter_broker()
    batch = []
    for n in range(N + 500):
        env = build_envelope({"n": n})
        reason = "upstream timeout" if n < N else "bad payload"
        batch.append(OutgoingMessage(body=annotate_dead_letter(dumps(env), reason), task_id=env["extra"]["task_id"]))
        if len(batch) == 1000:
            dlx.publish(batch)
            batch = []
    dlx.publish(batch)
    job.consume()
    wait_until(lambda: admin.record(qname_web), timeout=20)
    login(client, names["operator"])
    hdr = {"X-CSRF-Token": csrf_of(client.get("/queues").text)}
    url = f"/api/deadletters/{qname_web}"
    preview = client.post(url, json={"action": "retry", "reason": "upstream timeout"}, headers=hdr).json()
    assert preview == {"preview": True, "action": "retry", "matched": N,
                       "hint": f"send again with confirm: {N} to run it"}
    assert runs == collections.Counter()  # a preview changes nothing
    done = client.post(url, json={"action": "retry", "reason": "upstream timeout", "confirm": N}, headers=hdr)
    assert done.status_code == 200 and done.json()["matched"] == N
    wait_until(lambda: sum(runs.values()) >= N, timeout=180)
    job.stop_consume(30)
    assert len(runs) == N and set(runs.values()) == {1} and max(runs) == N - 1  # each ran once, no other
    assert admin.dead_letters(qname_web, "count").matched == 500  # the others are still there
    entry = [e for e in read_audit(admin.state, 50) if e["target"] == qname_web][0]
    assert entry["action"] == "dead_letters.retry" and entry["count"] == N and entry["who"] == names["operator"]
    assert entry["detail"]["filter"]["reason"] == "upstream timeout"
    page = client.get("/audit")
    assert f"{N}" in page.text and qname_web in page.text
