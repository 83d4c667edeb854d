"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE URL MARKER_DIR HOLD [HB [CONC]]``.

It runs the DRAMATIQ booster's real dramatiq Worker through ``funboost.testing.workers.marker_worker``: each
task writes ``started.<x>.<pid>``, then holds HOLD seconds (HOLD=1: 120 s, to be SIGKILLed mid-task) and
writes ``done.<x>``.
HB: the Redis heartbeat timeout (``default`` = the plugin's default configuration). CONC: concurrent_num."""
import sys

from funboost.testing.workers import marker_worker

queue, url, marker_dir, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
hb = sys.argv[5] if len(sys.argv) > 5 else "default"
concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 2
cfg = {"broker_url": url}
if url.startswith("redis") and hb != "default":
    cfg["heartbeat_timeout"] = float(hb)
marker_worker("DRAMATIQ", queue, cfg, marker_dir, 120.0 if hold == 1 else hold, concurrency)
