# Original-style script: BoosterDiscovery over a project folder, then BoostersManager sees its queues;
# register_broker_exclusive_config_default, get_current_taskid, HasNotAsyncResult. Prints OK at the end.
import sys
import threading
from pathlib import Path
from funboost import (BoosterDiscovery, BoosterParams, BoostersManager, HasNotAsyncResult, boost,
                      get_current_taskid, register_broker_exclusive_config_default)

project = Path(sys.argv[1])
suffix = sys.argv[2]
(project / "tasks").mkdir()
(project / "tasks" / "__init__.py").write_text("")
(project / "tasks" / "task_add.py").write_text(
    "from funboost import boost, BoosterParams\n"
    f"@boost(BoosterParams(queue_name='disc_add_{suffix}', broker_kind='memory'))\n"
    "def add(x, y):\n    return x + y\n")
(project / "tasks" / "not_a_task.txt").write_text("ignored")
(project / "tasks" / "skip_me.py").write_text("raise RuntimeError('must not be imported')\n")
imported = BoosterDiscovery(project, ["tasks"], max_depth=1, py_file_re_str=r"^task_").auto_discovery()
assert imported == ["tasks.task_add"], imported
assert f"disc_add_{suffix}" in BoostersManager.get_all_queues()

register_broker_exclusive_config_default("SQLITE_QUEUE", {"db_dir": str(project / "dbs")})
merged = BoosterParams(queue_name="q_defaults", broker_kind="sqlite3",
                       broker_exclusive_config={"db_path": None}).broker_exclusive_config  # another name of the kind
assert merged == {"db_dir": str(project / "dbs"), "db_path": None}, merged  # the booster's own keys win
try:
    register_broker_exclusive_config_default("sqlite", {"db_dirr": "x"})
    BoosterParams(queue_name="q_typo", broker_kind="sqlite")
except ValueError as exc:  # the plugin's options model still rejects unknown keys
    assert "db_dirr" in str(exc)
else:
    raise AssertionError("a misspelt default option was accepted")

seen = []
done = threading.Event()


@boost(BoosterParams(queue_name=f"taskid_{suffix}", broker_kind="memory"))
def remember():
    seen.append(get_current_taskid())
    done.set()


assert get_current_taskid() is None
r = remember.push()
remember.consume()
assert done.wait(60) and seen == [r.task_id], (seen, r.task_id)
try:
    r.get(timeout=1)
except HasNotAsyncResult:
    pass
else:
    raise AssertionError("a result without rpc mode")
remember.stop_consume()
print("OK")
