# Original-style script: what users of the original write around a task's record and with the fields of its
# earlier versions. The record hook of the original's docs reads the original's attribute names; the
# instance-method example uses ClsHelper; old spellings (msg_expire_senconds, consumin_function_decorator,
# retry_interval) validate and act; do_not_run_by_specify_time holds tasks inside its window. Prints OK.
import copy
import datetime as dt
import sys
import threading
import time
import warnings

from funboost import BoosterParams, BrokerEnum, boost
from funboost.utils.class_utils import ClsHelper
# module paths of the original's docs and of its earlier versions
from funboost.concurrent_pool.custom_threadpool_executor import ThreadPoolExecutorShrinkAble  # noqa: F401
from funboost.core.func_params_model import PriorityConsumingControlConfig  # noqa: F401
from funboost.core.helper_funs import run_forever  # noqa: F401
from funboost.timing_job.timing_push import ApsJobAdder  # noqa: F401

suffix = sys.argv[1]
records, lock = [], threading.Lock()


def my_record_hook(function_result_status):  # as in the original's docs
    with lock:
        records.append((function_result_status.publish_time_format, function_result_status.msg_dict,
                        function_result_status.process_id, function_result_status.thread_id,
                        function_result_status.host_process, function_result_status.get_status_dict()))


@boost(BoosterParams(queue_name=f"names_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE,
                     user_custom_record_process_info_func=my_record_hook))
def add(x, y):
    return x + y


add.consume()
for i in range(3):
    add.push(i, y=10)
deadline = time.time() + 20
while len(records) < 3 and time.time() < deadline:
    time.sleep(0.05)
assert len(records) == 3, records
fmt, msg_dict, pid, tid, host_process, status = records[0]
assert dt.datetime.strptime(fmt, "%Y-%m-%d %H:%M:%S"), fmt
assert msg_dict["y"] == 10 and msg_dict["extra"]["task_id"] == status["task_id"], msg_dict
assert isinstance(pid, int) and tid and host_process.endswith(str(pid)), (pid, tid, host_process)
for name in ("host_name", "process_id", "thread_id", "publish_time_format", "publish_time_str", "msg_dict",
             "params_str", "function", "total_thread", "script_name", "task_id", "result", "success", "run_times"):
    assert name in status, name
assert status["function"] == "add" and status["script_name"] == "status_names_and_old_fields.py", status
add.stop_consume()


# the instance-method consumer of the original's docs
class Calculator:
    def __init__(self, base):
        self.obj_init_params = ClsHelper.get_obj_init_params_for_funboost(copy.copy(locals()))
        self.base = base

    @boost(BoosterParams(queue_name=f"method_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE, is_using_rpc_mode=True,
                         state_backend="memory"))
    def plus(self, x):
        return self.base + x


assert Calculator(5).obj_init_params == {"base": 5}
Calculator.plus.consume()
assert Calculator.plus.push(Calculator(100), 1).get(timeout=20) == 101
Calculator.plus.stop_consume()

# fields of the original's earlier versions
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    attempts = []

    @boost(BoosterParams(queue_name=f"old_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE, msg_expire_senconds=300,
                         retry_interval=0.5, max_retry_times=2))
    def flaky(x):
        attempts.append(time.time())
        raise ValueError("always")

assert flaky.params.msg_expire_seconds == 300
flaky.consume()
flaky.push(1)
deadline = time.time() + 20
while len(attempts) < 3 and time.time() < deadline:
    time.sleep(0.05)
assert len(attempts) == 3, attempts  # the first run and max_retry_times=2 retries
assert all(b - a >= 0.45 for a, b in zip(attempts, attempts[1:])), attempts  # retry_interval between them
flaky.stop_consume()

# do_not_run_by_specify_time: a window around now holds the task
now = dt.datetime.now()
window = ((now - dt.timedelta(hours=1)).strftime("%H:%M:%S"), (now + dt.timedelta(hours=1)).strftime("%H:%M:%S"))
ran = []


@boost(BoosterParams(queue_name=f"window_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE,
                     is_do_not_run_by_specify_time_effect=True, do_not_run_by_specify_time=window))
def held(x):
    ran.append(x)


held.consume()
held.push(1)
time.sleep(1.5)  # nothing may run: the absence is checked over a short time
assert ran == [] and held.get_message_count() == 1, (ran, held.get_message_count())
held.stop_consume()
print("OK")
