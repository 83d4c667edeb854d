"""A consumer process through the engine: @boost(... broker_kind="SQLALCHEMY") and f.consume().

usage: _boost_worker.py QUEUE OUT_FILE SLEEP OPTIONS_JSON
Each finished task's argument is appended to OUT_FILE before the engine acks it.
"""
import json
import sys
import threading
import time

from funboost import BoosterParams, boost

queue, out_path, sleep, options = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
out = open(out_path, "a", buffering=1)
lock = threading.Lock()


@boost(BoosterParams(queue_name=queue, broker_kind="SQLACHEMY", concurrent_num=8, state_backend="memory",
                     broker_exclusive_config=options, log_to_console=False))
def work(i: int) -> None:
    time.sleep(sleep)
    with lock:
        out.write(f"{i}\n")


if __name__ == "__main__":
    out.write("READY\n")
    work.consume()
    while True:
        time.sleep(1)
