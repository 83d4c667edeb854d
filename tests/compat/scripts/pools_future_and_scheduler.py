# Original-style script: publisher.get_future on the memory queue, MemoryFunboostPool / FunboostPool as
# ThreadPoolExecutor replacements, the process-wide funboost_aps_scheduler, concurrent_pool as
# specify_concurrent_pool, ResultFromMongo over persisted status records. Prints OK at the end.
import sys
import threading
import time
import warnings

from funboost import (BoosterParams, BrokerEnum, FunboostPool, FunboostPoolPickleFunc, FunctionResultStatusPersistanceConfig,
                      MemoryFunboostPool, ResultFromMongo, boost, funboost_aps_scheduler)
from funboost.concurrent_pool import CustomThreadPoolExecutor

suffix = sys.argv[1]


@boost(BoosterParams(queue_name=f"future_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE, max_retry_times=0))
def call_it(func, args, kwargs):
    return func(*args, **kwargs)


call_it.consume()
status = call_it.publisher.get_future(lambda a, b: a * b, (6, 7), {}).result(timeout=30)  # any object travels
assert status.success and status.result == 42, status.to_dict()
failed = call_it.publisher.get_future(lambda: {}["missing"], (), {}).result(timeout=30)
assert not failed.success and failed.exception_type == "KeyError"


def add(x, y):
    return x + y


async def aio_double(x):
    return 2 * x


with MemoryFunboostPool(4, qps=None) as pool:
    futures = [pool.submit(add, i, y=10) for i in range(5)]
    assert [f.result(timeout=30) for f in futures] == [10, 11, 12, 13, 14]
    assert pool.submit(aio_double, 21).result(timeout=30) == 42
    assert list(pool.map(add, [1, 2], [3, 4], timeout=30)) == [4, 6]
    try:
        pool.submit(add, "a", 1).result(timeout=30)
    except Exception as exc:
        assert "TypeError" in str(exc), exc
    else:
        raise AssertionError("a failing function did not raise from result()")

shared = FunboostPool(BoosterParams(queue_name=f"fpool_{suffix}", broker_kind=BrokerEnum.SQLITE_QUEUE,
                                    state_backend="sqlite"), is_need_result=True)
try:
    shared.submit(add, 2, 3)
except TypeError as exc:  # a function of a script run as __main__ cannot be imported by a consumer
    assert "__main__" in str(exc), exc
else:
    raise AssertionError("a function of __main__ was published by path")
with open("pool_funcs.py", "w") as f:  # the project's own module (the current folder is the project here)
    f.write("def mul(a, b=1):\n    return a * b\n")
sys.path.insert(0, ".")
from pool_funcs import mul  # noqa: E402

assert [f.result(timeout=30) for f in [shared.submit(mul, 3, b=4), shared.submit(mul, 5)]] == [12, 5]
import json  # a library function is refused by the consumer: a message must not pick any function
fut = shared.submit(json.dumps, [1])
try:
    fut.result(timeout=30)
except Exception as exc:
    assert "PermissionError" in str(exc) and "json" in str(exc), exc
else:
    raise AssertionError("a library function ran through FunboostPool")
allowed = FunboostPool(BoosterParams(queue_name=f"fpool_ok_{suffix}", broker_kind=BrokerEnum.SQLITE_QUEUE,
                                     state_backend="sqlite"), is_need_result=True, allowed_modules=["json"])
assert allowed.submit(json.dumps, [1, 2]).result(timeout=30) == "[1, 2]"
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    FunboostPoolPickleFunc(BoosterParams(queue_name=f"fpool_pk_{suffix}", broker_kind=BrokerEnum.SQLITE_QUEUE,
                                         state_backend="sqlite"), is_auto_start_consuming_message=False)
assert any("never pickled" in str(w.message) for w in seen), [str(w.message) for w in seen]

ticks = []
two_ticks = threading.Event()


@boost(BoosterParams(queue_name=f"aps_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE,
                     specify_concurrent_pool=CustomThreadPoolExecutor(3),
                     function_result_status_persistance_conf=FunctionResultStatusPersistanceConfig(
                         is_save_status=True, is_save_result=True)))
def tick(x, y):
    ticks.append(x + y)
    if len(ticks) >= 2:
        two_ticks.set()
    return x + y


tick.consume()
funboost_aps_scheduler.add_push_job(tick, "interval", id=f"every_second_{suffix}", seconds=1, kwargs={"x": 5, "y": 6})
funboost_aps_scheduler.start()
assert two_ticks.wait(30), ticks
funboost_aps_scheduler.remove_job(f"every_second_{suffix}")
assert ticks[:2] == [11, 11]

r = tick.push(1, 2)
deadline = time.time() + 30
while ResultFromMongo(r.task_id, f"aps_{suffix}").get_result() != 3:
    assert time.time() < deadline, "status record of the task not found"
    time.sleep(0.05)
funboost_aps_scheduler.shutdown()
for b in (call_it, tick):
    b.stop_consume()
for p in (shared, allowed):
    p.shutdown()
print("OK")  # nothing left running: the process ends here
