"""A consumer process for the tests: an ordinary ``@boost`` function on the http kind, consuming.
Prints "READY <address> <pid>" once it listens.

usage: python consumer_proc.py QUEUE PORT [broker_exclusive_config as JSON]
"""
import json
import os
import sys
import time
from typing import Optional

from funboost import BoosterParams, boost

queue, port = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}


@boost(BoosterParams(queue_name=queue, broker_kind="HTTP", broker_exclusive_config={"port": port, **extra},
                     concurrent_num=8, max_retry_times=0, state_backend="memory", log_to_console=False))
def work(x: int = 0, sleep: float = 0, fail: Optional[str] = None) -> dict:
    if sleep:
        time.sleep(sleep)
    if fail:
        raise ZeroDivisionError(fail)
    return {"doubled": x * 2, "pid": os.getpid()}


work.consume()
print("READY", work.broker.serve(), os.getpid(), flush=True)
time.sleep(float(os.environ.get("CONSUMER_LIFETIME", "120")))
os._exit(0)
