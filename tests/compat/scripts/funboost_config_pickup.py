# Original-style script, run with a project root that has the original's funboost_config.py (written by the
# test, as a user's project has it) on PYTHONPATH: its BrokerConnConfig points the REDIS broker at db 3 and
# the framework picks it up with one notice; a variable already in the environment wins; nothing is written
# into the project. Prints OK at the end.
import os
import sys
import warnings

suffix, project = sys.argv[1], sys.argv[2]


def listing():  # Python's own __pycache__ for the imported config file aside
    return sorted(n for n in os.listdir(project) if n != "__pycache__")


before = listing()

with warnings.catch_warnings(record=True) as notices:
    warnings.simplefilter("always")
    from funboost import BoosterParams, BrokerConnConfig, BrokerEnum, boost

    @boost(BoosterParams(queue_name=f"cfg_add_{suffix}", broker_kind=BrokerEnum.REDIS_ACK_ABLE,
                         is_using_rpc_mode=True, state_backend="sqlite"))
    def add(x, y):
        return x + y

    @boost(BoosterParams(queue_name=f"cfg_other_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE))
    def other(x):
        return x

config_notices = [str(w.message) for w in notices if "funboost_config.py" in str(w.message)]
assert len(config_notices) == 1, config_notices  # once per process
notice = config_notices[0]
assert "FUNBOOST_REDIS_URL=redis://127.0.0.1:6379/3" in notice, notice
assert "FUNBOOST_SQLITE_DIR" not in notice, notice  # the template's /sqllite_queues means "not configured"
assert "kept: FUNBOOST_RABBITMQ_URL" in notice, notice
assert "set FUNBOOST_STATE_BACKEND=redis" in notice, notice  # where RPC results go here, said plainly
assert os.environ["FUNBOOST_REDIS_URL"] == "redis://127.0.0.1:6379/3", os.environ["FUNBOOST_REDIS_URL"]
assert os.environ["FUNBOOST_RABBITMQ_URL"] == "amqp://from-the-environment/", "the environment must win"
assert BrokerConnConfig.REDIS_DB == 3 and BrokerConnConfig.REDIS_HOST == "127.0.0.1"

add.clear()
add.consume()
assert add.push(1, 2).get() == 3  # through the redis the config file names
import redis  # noqa: E402
r = redis.Redis.from_url("redis://127.0.0.1:6379/3")
assert any(str(k).find(f"cfg_add_{suffix}") >= 0 for k in r.scan_iter(match=f"*cfg_add_{suffix}*")), \
    "the queue is not in redis db 3"
add.stop_consume()

# FunboostCommonConfig.TIMEZONE: schedules fire in it and publish_time_format is written in it, as in the original
assert "FUNBOOST_TIMEZONE=Asia/Shanghai" in notice, notice
from funboost import ApsJobAdder  # noqa: E402
adder = ApsJobAdder(other, job_store_kind="memory", is_auto_start=False)  # not started: the script may end
job = adder.add_push_job(trigger="cron", hour=9, args=(1,), id=f"tz_{suffix}")
assert str(job.trigger.timezone) == "Asia/Shanghai", job.trigger.timezone
from funboost import funboost_aps_scheduler  # noqa: E402
assert str(adder.aps_obj.timezone) == str(funboost_aps_scheduler.timezone) == "Asia/Shanghai"
import datetime as dt  # noqa: E402
import zoneinfo  # noqa: E402
from funboost.records import FunctionResultStatus  # noqa: E402
shanghai = dt.datetime(2030, 1, 1, 8, 0, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Shanghai"))
st = FunctionResultStatus("q", "t", {}, publish_time=shanghai.timestamp())
assert st.publish_time_format == "2030-01-01 08:00:00", st.publish_time_format
assert listing() == before, "something was written into the user's project"
print("OK")
