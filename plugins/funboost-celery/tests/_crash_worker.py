"""A consumer process for the crash test: ``python _crash_worker.py QUEUE URL MARKER_DIR SLOW``.

It runs the CELERY booster's real Celery worker; each task writes ``started.<pid>``, then either hangs
(SLOW=1, to be SIGKILLed mid-task) or writes ``done.<x>``."""
import os
import sys
import time

os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
from funboost import BoosterParams, boost  # noqa: E402

queue, url, marker_dir, slow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
cfg = {"broker_url": url}
if url.startswith("redis"):
    cfg["visibility_timeout"] = 3


@boost(BoosterParams(queue_name=queue, broker_kind="CELERY", broker_exclusive_config=cfg, concurrent_num=2,
                     state_backend="memory", log_to_console=False, max_retry_times=0))
def work(x: int) -> int:
    open(os.path.join(marker_dir, f"started.{os.getpid()}"), "w").close()
    if slow:
        time.sleep(120)
    open(os.path.join(marker_dir, f"done.{x}"), "w").close()
    return x


work.consume()
print("consuming", flush=True)
while True:
    time.sleep(1)
