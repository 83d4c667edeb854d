"""A consumer process through the engine: @boost(... broker_kind="SQLITE_QUEUE") and f.consume().

usage: _boost_worker.py QUEUE OUT_FILE SLEEP
The task appends its argument to OUT_FILE when it finishes (before the engine acks it).
"""
import sys
import threading
import time

from funboost import BoosterParams, boost

queue, out_path, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = open(out_path, "a", buffering=1)
lock = threading.Lock()


@boost(BoosterParams(queue_name=queue, broker_kind="SQLITE_QUEUE", concurrent_num=8, state_backend="memory",
                     log_to_console=False))
def work(i: int) -> None:
    time.sleep(sleep)
    with lock:
        out.write(f"{i}\n")


if __name__ == "__main__":
    out.write("READY\n")
    work.consume()
    while True:
        time.sleep(1)
