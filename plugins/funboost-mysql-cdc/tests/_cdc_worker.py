"""A consumer process through the engine: @boost(... broker_kind="MYSQL_CDC") and f.consume().

usage: _cdc_worker.py QUEUE OUT_FILE SLEEP OPTIONS_JSON
The function appends the row's id to OUT_FILE when it finishes (before the engine acks it), so a row
counts as "seen" even when this process is SIGKILLed before the ack.
"""
import json
import random
import sys
import threading
import time

from funboost import BoosterParams, boost

queue, out_path, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
options = json.loads(sys.argv[4])
out = open(out_path, "a", buffering=1)
lock = threading.Lock()


@boost(BoosterParams(queue_name=queue, broker_kind="MYSQL_CDC", concurrent_num=8,
                     broker_exclusive_config=options, log_to_console=False))
def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None) -> None:
    time.sleep(random.uniform(0, sleep))  # out-of-order completion
    with lock:
        out.write(f"{values['id']}\n")


if __name__ == "__main__":
    on_row.consume()
    while True:
        time.sleep(1)
