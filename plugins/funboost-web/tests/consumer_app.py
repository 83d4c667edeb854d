"""A consumer process for the web manager's tests: ``python consumer_app.py KIND PREFIX``. Its functions are
defined here only: the manager (in the test process) never imports this module. Runs until stdin closes."""
from __future__ import annotations

import sys
import time

from funboost import BoosterParams, FunctionResultStatusPersistenceConfig, boost

kind, prefix = sys.argv[1], sys.argv[2]
status = FunctionResultStatusPersistenceConfig(is_save_status=True, is_save_result=True)
common = dict(broker_kind=kind, log_to_console=False, function_result_status_persistence_conf=status,
              is_print_detail_exception=False)


@boost(BoosterParams(queue_name=f"{prefix}_work", concurrent_num=4, **common))
def work(x: int):
    time.sleep(0.01)
    return x


@boost(BoosterParams(queue_name=f"{prefix}_add", is_using_rpc_mode=True, **common))
def add(x: int, y: int):
    return x + y


@boost(BoosterParams(queue_name=f"{prefix}_fail", max_retry_times=0, is_push_to_dlx_queue_when_retry_max_times=True,
                     **common))
def fail(n: int):
    raise ValueError(f"kaboom {n}")


for b in (work, add, fail):
    b.consume()
print("consuming", flush=True)
sys.stdin.read()
for b in (work, add, fail):
    b.stop_consume(5)
