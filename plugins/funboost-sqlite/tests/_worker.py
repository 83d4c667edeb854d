"""A consumer process for the crash tests: fetch, record the task id as done, then ack.

usage: _worker.py QUEUE OUT_FILE SLEEP [OPTIONS_JSON]
Each finished task id is appended to OUT_FILE (flushed) *before* it is acked, so a task counts as
"ran" even when this process is SIGKILLed before the ack.
"""
import json
import sys
import time

from funboost_sqlite import SqliteBroker


def main() -> None:
    queue, out_path, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    b = SqliteBroker(queue, SqliteBroker.parse_options(options))
    with open(out_path, "a", buffering=1) as out:
        out.write("READY\n")
        while True:
            batch = b.fetch(5, 1.0)
            for d in batch:
                if sleep:
                    time.sleep(sleep)
                tid = json.loads(d.body)["extra"]["task_id"]
                out.write(("R:" if d.redelivered else "") + tid + "\n")
            out.flush()
            b.ack(batch)


if __name__ == "__main__":
    main()
