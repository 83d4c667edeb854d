"""Scheduled jobs of the shared job stores (sqlite, redis, sqlalchemy on PostgreSQL), listed, paused, resumed and removed through the API
(the jobs are added by an ApsJobAdder of this process: the manager reads the store, not the scheduler)."""
from __future__ import annotations

import pytest

from conftest import csrf_of, login
from funboost.state.base import resolve_state_backend_class
from funboost.testing import require_service

pytest.importorskip("sqlalchemy")

from funboost import ApsJobAdder, BoosterParams, boost  # noqa: E402
from funboost.admin.catalog import CATALOG  # noqa: E402
from funboost.testing import wait_until  # noqa: E402


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _hourly_job(admin, queue: str, store: str, monkeypatch) -> ApsJobAdder:
    """A catalogued queue with one job "hourly" (kwargs x=7) in its ``store``, on a paused scheduler."""
    if store == "sqlalchemy":  # a PostgreSQL job store, found through the URL the schedulers use too
        pytest.importorskip("psycopg2")
        reason = resolve_state_backend_class("sqlalchemy").check_available(PG_URL)
        if reason:
            require_service(reason)
        monkeypatch.setenv("FUNBOOST_APS_SQLALCHEMY_URL", PG_URL)

    @boost(BoosterParams(queue_name=queue, broker_kind="sqlite_queue", log_to_console=False))
    def tick(x: int):
        return x

    admin.state.doc_put(CATALOG, queue, {"queue": queue, "broker_kind": "sqlite", "broker_options": {}})
    adder = ApsJobAdder(tick, job_store_kind=store, is_auto_start=True, is_auto_paused=True)
    try:
        adder.add_push_job(trigger="interval", seconds=3600, kwargs={"x": 7}, id="hourly", replace_existing=True)
    except BaseException:
        adder.shutdown()
        raise
    return adder


@pytest.mark.parametrize("store", ["sqlite", "redis", "sqlalchemy"])
def test_jobs_listed_paused_resumed_removed(web, backend_name, qname_web, store, monkeypatch):
    client, admin, names = web
    adder = _hourly_job(admin, qname_web, store, monkeypatch)
    try:
        login(client, names["operator"])
        hdr = {"X-CSRF-Token": csrf_of(client.get("/queues").text)}
        stores = client.get("/api/jobs").json()["stores"]
        mine = [s for s in stores if s["queue"] == qname_web and s["kind"] == store][0]
        job = mine["jobs"][0]
        assert job["id"] == "hourly" and job["kwargs"] == {"x": 7} and not job["paused"] and job["next_run_time"]
        page = client.get("/jobs")
        assert "hourly" in page.text and "interval[1:00:00]" in page.text
        base = f"/api/jobs/{store}/{qname_web}/hourly"
        assert client.post(base + "/pause", json={}, headers=hdr).json() == {"ok": True}
        assert adder.aps_obj.get_job("hourly").next_run_time is None  # the store says paused
        assert client.post(base + "/resume", json={}, headers=hdr).json() == {"ok": True}
        assert adder.aps_obj.get_job("hourly").next_run_time is not None
        viewer_denied = client.post(base + "/remove", json={}, headers={})
        assert viewer_denied.status_code == 403  # no CSRF token
        assert client.post(base + "/remove", json={}, headers=hdr).json() == {"ok": True}
        wait_until(lambda: adder.aps_obj.get_job("hourly") is None, timeout=5)
        assert [e["action"] for e in client.get("/api/audit").json()["entries"][:3]] == [
            "job.remove", "job.resume", "job.pause"]
    finally:
        adder.shutdown()


@pytest.mark.parametrize("store", ["sqlite", "redis", "sqlalchemy"])
def test_a_forged_job_state_is_never_run_by_the_manager(web, backend_name, qname_web, store, monkeypatch, tmp_path):
    """Someone who can write a job store plants a pickled state that would run code when loaded: the jobs
    page lists the real job and runs nothing (funboost.job_state); a control of the planted job is refused."""
    import time

    from funboost.testing.job_state import forged_state, plant_state
    client, admin, names = web
    adder = _hourly_job(admin, qname_web, store, monkeypatch)
    marker = tmp_path / "ran"
    try:
        plant_state(store, qname_web, "forged", forged_state(marker), time.time() + 3600)
        login(client, names["operator"])
        hdr = {"X-CSRF-Token": csrf_of(client.get("/queues").text)}
        r = client.post(f"/api/jobs/{store}/{qname_web}/forged/pause", json={}, headers=hdr)
        assert r.status_code >= 400 and not marker.exists(), r.text
        stores = client.get("/api/jobs").json()["stores"]
        mine = [s for s in stores if s["queue"] == qname_web and s["kind"] == store][0]
        assert [j["id"] for j in mine["jobs"]] == ["hourly"] and not marker.exists()
    finally:
        adder.shutdown()
