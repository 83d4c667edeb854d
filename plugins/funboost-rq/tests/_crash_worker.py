"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE URL MARKER_DIR HOLD CONC [HB]``.

It runs the RQ booster's rq workers through ``funboost.testing.workers.marker_worker``: each task writes
``started.<x>.<pid>``, holds HOLD seconds, then writes ``done.<x>``.
HB: "default" (the plugin's default liveness settings) or ``interval,timeout`` seconds."""
import sys

from funboost.testing.workers import marker_worker

queue, url, marker_dir, hold, concurrency = sys.argv[1:6]
hb = sys.argv[6] if len(sys.argv) > 6 else "default"
cfg: dict = {"redis_url": url}
if hb != "default":
    interval, timeout = hb.split(",")
    cfg.update(heartbeat_interval=float(interval), heartbeat_timeout=float(timeout))
marker_worker("RQ", queue, cfg, marker_dir, float(hold), int(concurrency))
