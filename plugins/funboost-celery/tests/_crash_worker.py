"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE URL MARKER_DIR HOLD [HB [CONC]]``.

It runs the CELERY booster's real Celery worker; each task writes ``started.<x>.<pid>``, then holds
(HOLD=1: 120 s, to be SIGKILLed mid-task; a larger number: that many seconds) and writes ``done.<x>``.
HB: the Redis holder heartbeat_timeout (default 3; ``default`` = the plugin's default configuration).
CONC: concurrent_num (default 2)."""
import os
import sys
import time

os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
from funboost import BoosterParams, boost  # noqa: E402

queue, url, marker_dir, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
vt = sys.argv[5] if len(sys.argv) > 5 else "3"
concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 2
hold = 120.0 if hold == 1 else hold
cfg = {"broker_url": url}
if url.startswith("redis") and vt != "default":
    # the age-based backstop as short as the lease: it must never restore a living holder's message
    cfg["heartbeat_timeout"] = cfg["visibility_timeout"] = float(vt)


@boost(BoosterParams(queue_name=queue, broker_kind="CELERY", broker_exclusive_config=cfg,
                     concurrent_num=concurrency, state_backend="memory", log_to_console=False, max_retry_times=0))
def work(x: int) -> int:
    open(os.path.join(marker_dir, f"started.{x}.{os.getpid()}"), "w").close()
    if hold:
        time.sleep(hold)
    open(os.path.join(marker_dir, f"done.{x}"), "w").close()
    return x


work.consume()
print("consuming", flush=True)
while True:
    time.sleep(1)
