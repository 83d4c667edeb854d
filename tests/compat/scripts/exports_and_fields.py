# Written in the original funboost's style: import what its users import, and decorate with every
# 55.0 BoosterParams field. Run as its own process; prints OK at the end.
import sys
import warnings
import funboost
from funboost import BoosterParams, BrokerEnum, boost
from funboost.constant import BrokerEnum as BrokerEnum2, ConcurrentModeEnum
from funboost.core.func_params_model import BoosterParams as BP2, FunctionResultStatusPersistanceConfig
from funboost.consumers.base_consumer import AbstractConsumer
from funboost.publishers.base_publisher import AbstractPublisher
from funboost.core.current_task import fct, funboost_current_task
from funboost.core.msg_result_getter import AsyncResult, AioAsyncResult
from funboost.utils.ctrl_c_end import ctrl_c_recv
from funboost.factories.publisher_factory import get_publisher

sys.path.insert(0, sys.argv[1])
from original55 import ORIGINAL_55_EXPORTS, ORIGINAL_55_FIELDS, NOT_PROVIDED_EXPORTS  # noqa: E402

missing = [n for n in ORIGINAL_55_EXPORTS if n not in NOT_PROVIDED_EXPORTS and not hasattr(funboost, n)]
assert not missing, missing
still_missing = [n for n in NOT_PROVIDED_EXPORTS if hasattr(funboost, n)]
assert not still_missing, f"provided now, take them off NOT_PROVIDED_EXPORTS: {still_missing}"
# the module paths are aliases of the top-level objects, not copies
assert BrokerEnum2 is BrokerEnum and BP2 is BoosterParams and boost is funboost.boost
assert (AbstractConsumer, AbstractPublisher, fct, funboost_current_task, AsyncResult, AioAsyncResult, ctrl_c_recv,
        get_publisher) == (funboost.AbstractConsumer, funboost.AbstractPublisher, funboost.fct, funboost.fct,
                           funboost.AsyncResult, funboost.AioAsyncResult, funboost.ctrl_c_recv, funboost.get_publisher)

fields = set(BoosterParams.model_fields) | {"function_result_status_persistance_conf"}
assert not [f for f in ORIGINAL_55_FIELDS if f not in fields], [f for f in ORIGINAL_55_FIELDS if f not in fields]

# each field accepted by name with a value of the original's kind
values = dict(queue_name="compat_fields_q", broker_kind=BrokerEnum.MEMORY_QUEUE, project_name="p",
              concurrent_mode=ConcurrentModeEnum.THREADING, is_auto_start_specify_async_loop_in_child_thread=False,
              schedule_tasks_on_main_thread=True, delay_task_apscheduler_jobstores_kind="memory",
              publisher_override_cls=type("P", (), {}), booster_registry_name="other", is_fake_booster=False,
              auto_generate_info={"where": "here"},
              function_result_status_persistance_conf=FunctionResultStatusPersistanceConfig(
                  is_save_status=False, is_save_result=False))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    BoosterParams(**values)
    BoosterParams(**values)  # the compat notices are once per process
compat = [str(w.message) for w in caught if type(w.message).__name__ == "FunboostCompatWarning"]
assert len(compat) == 6, compat  # the 6 non-neutral values above that this project does not act on
assert any("schedule_tasks_on_main_thread" in m and "run_forever" in m for m in compat), compat

try:
    BoosterParams(queue_name="q", broker_kind="memory", qpss=3)  # typo protection stays
except Exception as exc:
    assert "qpss" in str(exc)
else:
    raise AssertionError("a misspelt field was accepted")
# funboost.nb_log: nb_log's helpers on the standard logging module
import os  # noqa: E402
from funboost import nb_log  # noqa: E402
lg = nb_log.get_logger("compat_nb_log", log_filename="compat_nb_log.log", log_path=os.getcwd())
lg.info("hello from nb_log")
for h in lg.handlers:
    h.flush()
assert "hello from nb_log" in open(os.path.join(os.getcwd(), "compat_nb_log.log"), encoding="utf-8").read()
assert nb_log.LogManager("compat_lm").get_logger_and_add_handlers(log_level_int=20).level == 20

# funboost.queues: the memory broker's queues by name
from funboost.queues.memory_queues_map import PythonQueues  # noqa: E402
mem = boost(BoosterParams(queue_name="compat_mem_view_q", broker_kind=BrokerEnum.MEMORY_QUEUE))(lambda x: x)
for i in range(3):
    mem.push(i)
q = PythonQueues.get_queue("compat_mem_view_q")
assert q.qsize() == 3 and not q.empty() and mem.get_message_count() == 3
assert q.clear() == 3 and q.empty()

# the booster's and BoostersManager's other names of the original
from funboost import BoostersManager  # noqa: E402
assert mem.multi_process_pub_params_list([{"x": i} for i in range(4)], process_num=2) == 4 and q.qsize() == 4
assert mem.boost_params is mem.params and mem.consuming_function(5) == 5
for alias, name in (("pub", "publish"), ("apply_async", "publish"), ("start", "consume"),
                    ("pause_consume", "pause"), ("delay", "push"), ("clear_queue", "clear")):
    assert getattr(type(mem), alias) is getattr(type(mem), name), alias
assert BoostersManager.get_boost_params("compat_mem_view_q") is mem.params
assert BoostersManager.get_all_queue_name__boost_params_unstrict_dict()["compat_mem_view_q"]["queue_name"] == \
    "compat_mem_view_q"
BoostersManager.show_all_boosters()
print("OK")
