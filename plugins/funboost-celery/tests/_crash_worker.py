"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE URL MARKER_DIR HOLD [HB [CONC]]``.

It runs the CELERY booster's real Celery worker through ``funboost.testing.workers.marker_worker``: each
task writes ``started.<x>.<pid>``, then holds (HOLD=1: 120 s, to be SIGKILLed mid-task; a larger number:
that many seconds) and writes ``done.<x>``.
HB: the Redis holder heartbeat_timeout (default 3; ``default`` = the plugin's default configuration).
CONC: concurrent_num (default 2)."""
import sys

from funboost.testing.workers import marker_worker

queue, url, marker_dir, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
vt = sys.argv[5] if len(sys.argv) > 5 else "3"
concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 2
cfg = {"broker_url": url}
if url.startswith("redis") and vt != "default":
    # the age-based backstop as short as the lease: it must never restore a living holder's message
    cfg["heartbeat_timeout"] = cfg["visibility_timeout"] = float(vt)
marker_worker("CELERY", queue, cfg, marker_dir, 120.0 if hold == 1 else hold, concurrency)
