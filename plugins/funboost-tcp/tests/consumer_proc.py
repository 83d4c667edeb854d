"""A consumer process for the tests: the real engine (``@boost`` with broker_kind="TCP") serving one queue.
Prints "READY <address> <pid>" once it listens.

The task: ``work(x=0, fail=None, sleep=0.0)`` -> ``{"doubled": 2x, "pid": pid}``; ``fail`` raises
ZeroDivisionError(fail); ``sleep`` waits first.

usage: python consumer_proc.py QUEUE PORT [broker_exclusive_config as JSON]
"""
import json
import os
import sys
import time

from funboost import BoosterParams, boost

queue, port = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}


@boost(BoosterParams(queue_name=queue, broker_kind="TCP", broker_exclusive_config={"port": port, **extra},
                     concurrent_num=8, max_retry_times=0, state_backend="memory", log_to_console=False))
def work(x: int = 0, fail: str = None, sleep: float = 0.0) -> dict:
    if sleep:
        time.sleep(sleep)
    if fail:
        raise ZeroDivisionError(fail)
    return {"doubled": 2 * x, "pid": os.getpid()}


work.consume()
print("READY", work.broker.serve(), os.getpid(), flush=True)
time.sleep(float(os.environ.get("CONSUMER_LIFETIME", "120")))
