"""The admin layer (funboost.admin): catalog, controls, metrics, search, dead letters, audit, with a real
consumer on the sqlite broker and the sqlite state backend (a file of this test session)."""
from __future__ import annotations

import time

import pytest

from funboost import BoosterParams, FunctionResultStatusPersistenceConfig, boost
from funboost.admin import DeadLetterFilter, QueueAdmin, read_audit
from funboost.admin.catalog import redact_options, redact_url
from funboost.plugins.broker import OutgoingMessage, annotate_dead_letter
from funboost.message import build_envelope, dumps
from funboost.state.base import get_state_backend
from funboost.testing import wait_until
from funboost.timeseries import HIST_BOUNDS, percentile


def test_shown_url_masks_every_secret_for_logs_and_errors():
    from funboost.redact import shown_url
    assert shown_url("amqp://guest:p%40ss@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert shown_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert shown_url("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert shown_url("nats://a:x1@h1:4222,nats://b:x2@h2:4222") == "nats://a:***@h1:4222,nats://b:***@h2:4222"
    assert shown_url("host=h user=u password='a b'") == "host=h user=u password=***"
    assert shown_url("redis://h:6379/0") == "redis://h:6379/0" and shown_url("localhost") == "localhost"


def test_redaction_drops_secrets_and_url_passwords():
    assert redact_url("redis://:s3cret@h:6379/0") == ("redis://h:6379/0", True)
    assert redact_url("amqp://guest:guest@127.0.0.1:5672/") == ("amqp://guest@127.0.0.1:5672/", True)
    assert redact_url("redis://h:6379/0") == ("redis://h:6379/0", False)
    opts, red = redact_options({"url": "amqp://u:pw@h/", "password": "x", "api_key": "k", "port": 1,
                                "nested": {"token": "t", "ok": True}, "hosts": ["redis://:p@a", "redis://b"]})
    assert "password" not in opts and "api_key" not in opts and "url" not in opts
    assert opts["url_redacted"] == "amqp://u@h/" and opts["port"] == 1 and opts["nested"] == {"ok": True}
    assert opts["hosts"] == ["redis://a", "redis://b"]
    assert sorted(red) == ["api_key", "hosts", "nested.token", "password", "url"]
    assert "pw" not in repr(opts) and "x" not in str(opts.values())


def test_percentile_of_histogram():
    from funboost.timeseries import hist_index
    h = {}
    for cost in [0.001] * 90 + [0.5] * 10:
        k = str(hist_index(cost))
        h[k] = h.get(k, 0) + 1
    p50, p95 = percentile(h, 0.5), percentile(h, 0.95)
    assert 0.001 <= p50 < 0.0014 and 0.5 <= p95 < 0.7
    assert percentile({}, 0.5) is None and HIST_BOUNDS[0] == 1e-5


@pytest.fixture
def admin():
    a = QueueAdmin(get_state_backend("sqlite"))
    yield a
    a.close()


def test_catalog_metrics_controls_search(admin, qname):
    calls = []

    @boost(BoosterParams(queue_name=qname, broker_kind="sqlite_queue", state_backend="sqlite",
                         log_to_console=False, concurrent_num=3, is_print_detail_exception=False,
                         function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(
                             is_save_status=True, is_save_result=True)))
    def work(x: int, tag: str = ""):
        calls.append(x)
        if x % 10 == 3:
            raise ValueError(f"bad input {x}")
        return x * 2

    for i in range(40):
        work.push(i, tag="hello")
    consumer = work.consume()
    try:
        wait_until(lambda: len(calls) >= 40 + 4 * 3, timeout=60)  # failures are retried 3 times
        rec = wait_until(lambda: admin.record(qname), timeout=10)
        assert rec["broker_kind"] == "sqlite" and rec["arg_names"] == ["x", "tag"]
        assert rec["required_args"] == ["x"] and rec["status_table"] == qname
        assert qname in admin.queue_names()
        size, err = admin.sizes(qname)
        assert err is None and size.ready == 0
        # controls: the flag is set, and the consumer shows it in its next heartbeat
        admin.pause(qname)
        wait_until(lambda: admin.applied(qname, "pause").on == 1, timeout=20)
        assert admin.applied(qname, "pause").of == 1
        work.push(1000)
        admin.set_qps(qname, 7.5)
        admin.set_concurrency(qname, 2)
        wait_until(lambda: admin.applied(qname, "qps").on == 1 and admin.applied(qname, "concurrent_num").on == 1,
                   timeout=20)
        size = admin.sizes(qname)[0]  # a fetch that was waiting when the pause came holds its message unrun
        assert size.ready + size.in_flight == 1 and 1000 not in calls
        admin.resume(qname)
        wait_until(lambda: 1000 in calls, timeout=20)
        # search: by exception text, failures only, paging
        failed = wait_until(lambda: admin.search(qname, success=False) or None, timeout=10)
        assert {r["params"]["x"] for r in failed} == {3, 13, 23, 33}
        hit = admin.search(qname, text="bad input 23")
        assert [r["params"]["x"] for r in hit] == [23] and hit[0]["run_times"] == 4
        page = admin.search(qname, limit=5)
        nxt = admin.search(qname, limit=5, before=(page[-1]["time_start"], page[-1]["task_id"]))
        assert len(page) == len(nxt) == 5 and not {r["task_id"] for r in page} & {r["task_id"] for r in nxt}
        assert admin.task_timeline(qname, hit[0]["task_id"])[0]["exception_type"] == "ValueError"
        assert admin.search(qname, host="no-such-host") == []
    finally:
        work.stop_consume() if hasattr(work, "stop_consume") else None
    # metrics: every run is in the per-second and the day rows once the consumer flushed
    admin.set_qps(qname, None)
    wait_until(lambda: admin.totals(qname)["runs"] == 41, timeout=20)
    tot = admin.totals(qname)
    assert tot["runs"] == 41 and tot["failures"] == 4  # a run with its retries is one record
    pts = admin.series(qname, "60s")
    assert len(pts) == 60 and sum(p.runs for p in pts) == tot["runs"]
    assert sum(p.failures for p in pts) == tot["failures"] and tot["failures"] >= 4
    assert sum(p.runs for p in admin.series(None, "60m")) >= tot["runs"]  # every queue summed
    # kept across restarts: a new manager (a new QueueAdmin, nothing cached) reads the same figures
    fresh = QueueAdmin(get_state_backend("sqlite"))
    assert fresh.totals(qname) == tot and sum(p.runs for p in fresh.series(qname, "60m")) == tot["runs"]
    assert admin.sizes(qname)[0].ready == 0  # a fresh reading (summaries reuse one up to 2 s old)
    summary = [s for s in admin.summaries() if s.queue == qname][0]
    assert summary.broker_kind == "sqlite" and summary.ready == 0 and summary.runs_total == tot["runs"]


def test_dead_letters_by_filter_and_audit(admin, qname):
    ran = []

    @boost(BoosterParams(queue_name=qname, broker_kind="sqlite_queue", state_backend="sqlite", log_to_console=False))
    def job(n: int):
        ran.append(n)

    dlx = job.broker.dead_letter_broker()
    msgs = []
    for n in range(30):
        env = build_envelope({"n": n})
        msgs.append(OutgoingMessage(body=annotate_dead_letter(dumps(env), "boom even" if n % 2 == 0 else "boom odd"),
                                    task_id=env["extra"]["task_id"]))
    dlx.publish(msgs)
    job.consume()
    wait_until(lambda: admin.record(qname), timeout=10)
    assert admin.dead_letters(qname, "count").matched == 30
    listed = admin.dead_letters(qname, "list", DeadLetterFilter(reason="boom odd"), limit=5)
    assert listed.matched == 5 and all(m["n"] % 2 == 1 for m in listed.messages)
    assert admin.dead_letters(qname, "count", DeadLetterFilter(reason="even")).matched == 15
    res = admin.dead_letters(qname, "retry", DeadLetterFilter(reason="even"), who="tester")
    assert res.matched == 15
    wait_until(lambda: len(ran) == 15, timeout=30)
    assert sorted(ran) == list(range(0, 30, 2))
    one = admin.dead_letters(qname, "list", DeadLetterFilter(text='"n":7'), limit=1).messages[0]
    tid = one["extra"]["task_id"]
    admin.dead_letters(qname, "retry", DeadLetterFilter(task_ids={tid}), edit=lambda kw: {**kw, "n": 700}, who="t")
    wait_until(lambda: 700 in ran, timeout=30)
    gone = admin.dead_letters(qname, "delete", DeadLetterFilter(reason="odd"), who="tester")
    assert gone.matched == 14 and admin.dead_letters(qname, "count").matched == 0
    log = read_audit(admin.state, limit=50)
    mine = [e for e in log if e["target"] == qname]
    assert [(e["action"], e["count"], e["who"]) for e in mine] == [
        ("dead_letters.delete", 14, "tester"), ("dead_letters.retry", 1, "t"), ("dead_letters.retry", 15, "tester")]
