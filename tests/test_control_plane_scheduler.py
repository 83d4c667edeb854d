"""Two scheduler processes on one shared job store (sqlite, redis) fire each per-second cron tick
exactly once: the job pushes one message per tick, so the queue must hold exactly one message per tick,
and the two processes together must report exactly that many runs."""
from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid

import pytest

import test_control_plane_worker as w

w.setup_env()

from funboost import ApsJobAdder  # noqa: E402

TICKS = 20  # seconds of per-second cron ticks: start .. start + TICKS inclusive


@pytest.mark.parametrize("stack", ["sqlite", "redis"])
def test_two_schedulers_fire_each_tick_once(stack, tmp_path):
    broker, state = w.require_stack(stack)
    cfg = dict(queue=f"cp_aps_{stack}_{uuid.uuid4().hex[:10]}", broker=broker, state=state)
    f = w.make_booster(cfg)
    # this process only writes the job to the store: started paused, it never fires
    adder = ApsJobAdder(f, job_store_kind=stack, is_auto_paused=True)
    start = math.ceil(time.time()) + 5  # leave the children time to start
    start_dt = dt.datetime.fromtimestamp(start).astimezone()
    adder.add_push_job(trigger="cron", second="*", args=(7,), id="every_second", replace_existing=True,
                       start_date=start_dt, end_date=start_dt + dt.timedelta(seconds=TICKS))
    children = [w.Child(tmp_path, mode="schedule", store=stack, until=start + TICKS + 2.5, **cfg)
                for _ in range(2)]
    try:
        outs = []
        for c in children:
            c.proc.wait(start + TICKS + 60 - time.time())
            assert c.proc.returncode == 0, c.stderr()
            outs.append(c.stdout())
        fired = [int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("fired")]
        assert len(fired) == 2, outs
        msgs = []
        deadline = time.monotonic() + 10
        while len(msgs) < TICKS + 1 and time.monotonic() < deadline:
            msgs.extend(f.broker.fetch(100, 0.5))
        msgs.extend(f.broker.fetch(100, 0.5))  # anything beyond one per tick would show up here
        seconds = sorted(int(json.loads(m.body)["extra"]["publish_time"]) for m in msgs)
        print(f"{stack}: runs per scheduler {fired}, {len(msgs)} messages for {TICKS + 1} ticks")
        assert sum(fired) == TICKS + 1, fired
        assert len(msgs) == TICKS + 1, seconds
        assert len(set(seconds)) == len(seconds), f"two pushes in one second: {seconds}"
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
        adder.remove_all_jobs()
        adder.shutdown()
        f.clear()
