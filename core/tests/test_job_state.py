"""Stored APScheduler job states are read without running code (funboost.job_state): what a job of funboost
stores loads exactly as pickle would load it; anything else is refused, never called."""
from __future__ import annotations

import datetime as dt
import io
import logging
import pickle
import time
import zoneinfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.combining import AndTrigger, OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from funboost import ApsJobAdder, BoosterParams, boost
from funboost.job_state import UnsafeJobState, load_job_state
from funboost.testing.job_state import CreatesFileWhenUnpickled, forged_state, plant_state
from funboost.timing_job import list_stored_jobs, make_job_store, push_fun_params_to_broker


class Point:  # a user's own class, as a job argument (admitted only through FUNBOOST_APS_TRUSTED_MODULES)
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def _states_of_every_trigger() -> list[bytes]:
    """Job states as APScheduler stores them, for each trigger kind, cron expression kind and zone kind."""
    out = []
    zones = [zoneinfo.ZoneInfo("Asia/Shanghai"), dt.timezone.utc, dt.timezone(dt.timedelta(hours=-3))]
    try:
        import pytz
        zones.append(pytz.timezone("Europe/Paris"))
    except ImportError:
        pass
    for tz in zones:
        sched = BackgroundScheduler(timezone=tz)
        sched.start(paused=True)
        try:
            triggers = [
                ("cron", {"hour": 3, "minute": "*/5", "day_of_week": "mon-fri", "day": "last"}),
                ("cron", {"day": "1st mon", "month": "1-6/2", "week": "*"}),
                ("cron", {"second": "*/2", "timezone": "UTC", "end_date": dt.datetime(2040, 1, 1)}),
                ("interval", {"seconds": 10, "start_date": dt.datetime(2026, 1, 1, 8)}),  # (no jitter: compared below)
                ("date", {"run_date": dt.datetime(2030, 1, 1, 12, 30)}),
                (OrTrigger([CronTrigger(hour=1), IntervalTrigger(hours=5)]), {}),
                (AndTrigger([CronTrigger(hour="*/4"), IntervalTrigger(hours=2, start_date=dt.datetime(2026, 1, 1))]),
                 {}),
            ]
            for trigger, kw in triggers:
                job = sched.add_job(push_fun_params_to_broker, trigger, kwargs={"y": [1, 2.5, None, "ü"]},
                                    args=("q", 1, dt.datetime(2026, 5, 1, 10), dt.date(2026, 5, 2),
                                          dt.timedelta(minutes=3), {"a": (1, 2)}, {3, 4}), **kw)
                out.append(pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL))
                out.append(pickle.dumps(job.__getstate__(), 2))
        finally:
            sched.shutdown(wait=False)
    return out


def test_every_trigger_and_zone_loads_as_pickle_loads_it():
    states = _states_of_every_trigger()
    assert len(states) >= 40
    for raw in states:
        safe, plain = load_job_state(raw), pickle.loads(raw)
        assert safe.keys() == plain.keys()
        assert {k: v for k, v in safe.items() if k != "trigger"} == {k: v for k, v in plain.items() if k != "trigger"}
        assert str(safe["trigger"]) == str(plain["trigger"]) and type(safe["trigger"]) is type(plain["trigger"])
        now = dt.datetime(2026, 6, 1, 9, tzinfo=dt.timezone.utc)
        assert safe["trigger"].get_next_fire_time(None, now) == plain["trigger"].get_next_fire_time(None, now)


class _Gadget:
    """Pickles as ``reduce(callable, args)``: how a forged state would try to run code."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _reaches_dunder() -> bytes:
    # getattr(datetime.datetime, "__class__"): the first step of a walk to object.__subclasses__()
    return pickle.dumps(_Gadget(getattr, dt.datetime, "__class__"), pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("make", [
    lambda marker: forged_state(marker),
    lambda marker: pickle.dumps(CreatesFileWhenUnpickled(marker), 0),
    lambda marker: pickle.dumps({"trigger": _Gadget(__import__("os").system, f"touch {marker}")}, 2),
    lambda marker: _reaches_dunder(),
    lambda marker: pickle.dumps(_Gadget(__import__("apscheduler.util").util.ref_to_obj, "os:system")),
    lambda marker: pickle.dumps(Point(1)),  # a class of a module that is not trusted
], ids=["open", "protocol-0", "os.system", "getattr-dunder", "apscheduler-function", "user-class"])
def test_a_state_naming_anything_else_is_refused_and_nothing_runs(tmp_path, make):
    marker = tmp_path / "ran"
    raw = make(marker)
    with pytest.raises(UnsafeJobState):
        load_job_state(raw)
    assert not marker.exists()


def test_trusted_modules_admit_the_users_own_classes(monkeypatch):
    raw = pickle.dumps({"args": ("q", Point(3))}, pickle.HIGHEST_PROTOCOL)
    with pytest.raises(UnsafeJobState, match="FUNBOOST_APS_TRUSTED_MODULES"):
        load_job_state(raw)
    monkeypatch.setenv("FUNBOOST_APS_TRUSTED_MODULES", f" other.module , {__name__}")
    assert load_job_state(raw) == {"args": ("q", Point(3))}


def test_not_a_pickle_is_an_unpickling_error():
    with pytest.raises(pickle.UnpicklingError):
        load_job_state(b"\x80\x05garbage")
    with pytest.raises(Exception):  # noqa: B017 - whatever the truncated stream raises, never a load
        load_job_state(io.BytesIO(pickle.dumps({"a": 1})).read()[:5])


def test_a_forged_job_in_the_sqlite_store_is_reported_dropped_and_never_run(qname, tmp_path, monkeypatch, caplog):
    """Someone who can write the job table plants a state beside a real job. ``funboost jobs`` reports it
    unreadable; a scheduler over that store drops it (APScheduler removes jobs it cannot restore) and keeps
    the real job; the planted code never runs."""
    pytest.importorskip("sqlalchemy")
    monkeypatch.setenv("FUNBOOST_APS_SQLITE_PATH", str(tmp_path / "jobs.sqlite3"))

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", log_to_console=False))
    def f(x: int) -> int:
        return x

    adder = ApsJobAdder(f, job_store_kind="sqlite", is_auto_start=True, is_auto_paused=True)
    marker = tmp_path / "ran"
    try:
        adder.add_push_job(trigger="interval", seconds=3600, kwargs={"x": 7}, id="hourly", replace_existing=True)
        plant_state("sqlite", qname, "forged", forged_state(marker), time.time() + 3600)

        listed = {j["id"]: j for j in list_stored_jobs("sqlite", [qname])}
        assert listed["hourly"]["kwargs"] == {"x": 7} and "error" not in listed["hourly"]
        assert "UnsafeJobState" in listed["forged"]["error"] and "io.open" in listed["forged"]["error"]
        assert not marker.exists()

        store, _ = make_job_store("sqlite", qname)
        store.start(adder.aps_obj, "check")
        with caplog.at_level(logging.ERROR):
            assert [j.id for j in store.get_all_jobs()] == ["hourly"]
        assert "forged" in caplog.text and not marker.exists()
        assert [j["id"] for j in list_stored_jobs("sqlite", [qname])] == ["hourly"]  # dropped from the store
    finally:
        adder.shutdown()
