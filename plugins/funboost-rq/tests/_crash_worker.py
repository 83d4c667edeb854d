"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE URL MARKER_DIR HOLD CONC [HB]``.

It runs the RQ booster's rq workers; each task writes ``started.<x>.<pid>``, holds HOLD seconds, then writes
``done.<x>``. HB: "default" (the plugin's default liveness settings) or ``interval,timeout`` seconds."""
import os
import sys
import time

os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
from funboost import BoosterParams, boost  # noqa: E402

queue, url, marker_dir, hold, concurrency = sys.argv[1:6]
hb = sys.argv[6] if len(sys.argv) > 6 else "default"
cfg: dict = {"redis_url": url}
if hb != "default":
    interval, timeout = hb.split(",")
    cfg.update(heartbeat_interval=float(interval), heartbeat_timeout=float(timeout))


@boost(BoosterParams(queue_name=queue, broker_kind="RQ", broker_exclusive_config=cfg,
                     concurrent_num=int(concurrency), state_backend="memory", log_to_console=False,
                     max_retry_times=0))
def work(x: int) -> int:
    open(os.path.join(marker_dir, f"started.{x}.{os.getpid()}"), "w").close()
    if float(hold):
        time.sleep(float(hold))
    open(os.path.join(marker_dir, f"done.{x}"), "w").close()
    return x


work.consume()
print("consuming", flush=True)
while True:
    time.sleep(1)
