"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE REDIS_URL MARKER_DIR HOLD [CONC]``.

It runs the HUEY booster on huey's consumer through ``funboost.testing.workers.marker_worker``: each task
writes ``started.<x>.<pid>``, then holds (HOLD=1: 120 s, to be SIGKILLed mid-task; another number: that
many seconds) and writes ``done.<x>``. Default liveness settings (the plugin's default configuration)."""
import sys

from funboost.testing.workers import marker_worker

queue, url, marker_dir, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 2
marker_worker("HUEY", queue, {"redis_url": url}, marker_dir, 120.0 if hold == 1 else hold, concurrency)
