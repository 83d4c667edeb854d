"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE REDIS_URL MARKER_DIR HOLD [CONC]``.

It runs the HUEY booster on huey's consumer; each task writes ``started.<x>.<pid>``, then holds
(HOLD=1: 120 s, to be SIGKILLed mid-task; another number: that many seconds) and writes ``done.<x>``.
Default liveness settings (the plugin's default configuration)."""
import os
import sys
import time

os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
from funboost import BoosterParams, boost  # noqa: E402

queue, url, marker_dir, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 2
hold = 120.0 if hold == 1 else hold


@boost(BoosterParams(queue_name=queue, broker_kind="HUEY", broker_exclusive_config={"redis_url": url},
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
