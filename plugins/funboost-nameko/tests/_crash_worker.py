"""A consumer process for the crash tests: ``python _crash_worker.py QUEUE MARKER_DIR HOLD [PROCESSES]``.

Each task writes ``started.<x>.<pid>``, holds HOLD seconds (to be SIGKILLed mid-task) and writes
``done.<x>``. PROCESSES > 0: ``multi_process_consume(PROCESSES)`` instead of ``consume()``."""
import os
import sys
import time

os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
from funboost import BoosterParams, boost  # noqa: E402

queue, marker_dir, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
processes = int(sys.argv[4]) if len(sys.argv) > 4 else 0


@boost(BoosterParams(queue_name=queue, broker_kind="NAMEKO", concurrent_num=2, state_backend="memory",
                     log_to_console=False, max_retry_times=0))
def work(x: int) -> int:
    open(os.path.join(marker_dir, f"started.{x}.{os.getpid()}"), "w").close()
    if hold:
        time.sleep(hold)
    open(os.path.join(marker_dir, f"done.{x}"), "w").close()
    return x


if __name__ == "__main__":
    if processes:
        work.multi_process_consume(processes)
    else:
        work.consume()
    print("consuming", flush=True)
    while True:
        time.sleep(1)
