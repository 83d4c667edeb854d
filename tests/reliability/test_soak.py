"""The soak at CI size (issue 19, item 5): tens of thousands of tasks per kind instead of the full 1,000,000
(memory) and 200,000 (sqlite, redis_ack_able) that scripts/soak.sh runs. RSS must not grow by 50 MB after
warm-up, open fds and threads must stay flat; the plot goes to the test's temporary directory (the full
run writes docs/figures/soak.png)."""
from __future__ import annotations

import os

import pytest

from .brokers import broker_options, require_broker
from .report import record
from .sizes import SIZE
from .soak import plot, run_soak


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis_ack_able"])
def test_soak_rss_fds_threads_flat(kind, sqlite_dir, tmp_path):
    options = broker_options(kind, sqlite_dir)
    if kind != "memory":
        require_broker(kind, options)
        options = {k: v for k, v in options.items() if k in ("db_dir", "url")}  # production liveness timings
    n = SIZE.soak_tasks[kind]
    result = run_soak(kind, n, options, interval=0.2)
    png = tmp_path / f"soak-{kind}.png"
    plot([result], str(png))
    assert os.path.getsize(png) > 10_000
    print(f"\n{kind}: {result.summary()}")
    record("soak", **result.summary())
    assert result.rss_growth_after_warmup_mb < 50, result.summary()
    assert result.fds_spread <= 4 and result.threads_spread <= 4, result.summary()
