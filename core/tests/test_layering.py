"""Core seams (issue 14): the record format as a leaf module, the engine fed by a ConsumerSetup, the
registry / dead-letter / flag modules, RunStatus and QueueFlag, and the defects found on the way."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import pytest

from funboost import BoosterParams, BoostersManager, FunctionResultStatusPersistenceConfig, RunStatus, boost
from funboost.exceptions import BrokerPluginError, UnknownBrokerKind
from funboost.testing import wait_until


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))


# ---------------------------------------------------------------- layering
def test_state_backends_do_not_import_the_engine():
    r = _run_python("""
        import sys
        import funboost.state.sqlite, funboost.state.memory, funboost.state.batched
        print(sorted(m for m in sys.modules if m.startswith("funboost.engine")))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_records_module_imports_nothing_of_engine_or_state():
    import ast
    import funboost.records
    tree = ast.parse(open(funboost.records.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # funboost.message: the exact JSON codec (ints beyond 64 bits, NaN) shared by envelopes and records;
    # itself a leaf (exceptions, a random source), checked below
    # funboost.timezone: publish_time_format of the original's field names (stdlib, and the settings class)
    assert {m for m in imported if m and m.startswith("funboost")} == {"funboost.enums", "funboost.message",
                                                                       "funboost.timezone"}
    import funboost.timezone
    tree = ast.parse(open(funboost.timezone.__file__).read())
    assert {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.module or "").startswith("funboost")} == {"funboost.funboost_config_deafult"}
    import funboost.message
    tree = ast.parse(open(funboost.message.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # funboost.eta: parses an eta when decode checks the per-message options; a leaf (stdlib only)
    assert {m for m in imported if m and m.startswith("funboost")} <= {"funboost.exceptions", "funboost.eta",
                                                                         "funboost.utils.private_random"}
    import funboost.eta
    tree = ast.parse(open(funboost.eta.__file__).read())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("funboost")]


def test_old_import_paths_still_work():
    from funboost.booster import BoostersManager as via_booster
    from funboost.engine.status import FunctionResultStatus, StatusBatch, expand_record
    from funboost.params import eta_to_timestamp
    from funboost.state.base import dumps_state, loads_state
    import funboost.eta
    import funboost.records
    import funboost.registry
    assert via_booster is BoostersManager is funboost.registry.BoostersManager
    assert FunctionResultStatus is funboost.records.FunctionResultStatus
    assert StatusBatch is funboost.records.StatusBatch and expand_record is funboost.records.expand_record
    assert dumps_state is funboost.records.dumps_state and loads_state is funboost.records.loads_state
    assert eta_to_timestamp is funboost.eta.eta_to_timestamp


def test_consumer_gets_a_setup_not_the_booster(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def f(x):
        return x

    f.consume()
    try:
        c = f.consumer
        assert not hasattr(c, "booster")
        assert c.setup.params is f.params and c.setup.func_name == f.func_name
    finally:
        f.stop_consume(5)


def test_regist_booster_is_a_deprecated_alias(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def f(x):
        return x

    with pytest.warns(DeprecationWarning, match="register_booster"):
        BoostersManager.regist_booster(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BoostersManager.register_booster(f)
    assert BoostersManager.get_booster(qname) is f


# ---------------------------------------------------------------- defects
def test_heartbeat_reports_the_consumer_start_time_not_the_import_time(qname):
    import funboost.engine.consumer  # noqa: F401  (imported long before this consumer starts)

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def f(x):
        return x

    time.sleep(0.05)  # a measurable gap between the engine's import and this start (not a wait for a condition)
    before = time.time()
    f.consume()
    try:
        f.consumer._heartbeat()
        live = f.get_live_consumers()
        assert len(live) == 1
        assert live[0]["started"] >= before
    finally:
        f.stop_consume(5)


def test_retry_delay_stays_out_of_the_user_context(qname):
    attempts = []

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         is_using_advanced_retry=True, max_retry_times=2, is_print_detail_exception=False,
                         advanced_retry_config={"retry_mode": "requeue", "retry_base_interval": 0.05},
                         function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(
                             is_save_status=True)))
    def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError("first attempt fails")
        return x

    stored = []
    state = flaky.state_backend()
    save = state.save_status_batch

    def recording_save(table, batch, ttl):  # every record the engine writes, before "latest per task" applies
        stored.extend(batch.dicts())
        save(table, batch, ttl)

    state.save_status_batch = recording_save
    flaky.push(1)
    flaky.consume()
    try:
        def finished():
            flaky.consumer.status_saver.flush()
            return any(r["run_status"] == RunStatus.FINISH and r["success"] for r in stored)
        wait_until(finished, 20)
    finally:
        flaky.stop_consume(5)
        del state.save_status_batch
    assert len(attempts) == 2
    assert [r["run_status"] for r in stored] == ["retry_later", "finish"]
    assert all(r["user_context"] == {} for r in stored), stored


def test_new_consumer_id_names_its_queue():
    from funboost.plugins.broker import new_consumer_id
    a, b = new_consumer_id("orders"), new_consumer_id("orders")
    assert a.startswith("orders@") and a != b
    assert not new_consumer_id("other").startswith("orders")


def test_a_shared_persistence_config_gives_each_queue_its_own_table(qname):
    conf = FunctionResultStatusPersistenceConfig(is_save_status=True)
    p1 = BoosterParams(queue_name=qname + "_1", broker_kind="memory", function_result_status_persistence_conf=conf)
    p2 = BoosterParams(queue_name=qname + "_2", broker_kind="memory", function_result_status_persistence_conf=conf)
    assert p1.function_result_status_persistence_conf.table_name == qname + "_1"
    assert p2.function_result_status_persistence_conf.table_name == qname + "_2"
    assert conf.table_name is None  # the user's object is not changed
    explicit = FunctionResultStatusPersistenceConfig(is_save_status=True, table_name="shared_table")
    p3 = BoosterParams(queue_name=qname + "_3", broker_kind="memory", function_result_status_persistence_conf=explicit)
    assert p3.function_result_status_persistence_conf.table_name == "shared_table"


def test_unknown_kind_names_only_distributions_that_exist():
    from funboost.plugins.manager import resolve_broker_kind
    with pytest.raises(UnknownBrokerKind) as err:
        resolve_broker_kind("beanstalkd")
    assert "funboost-beanstalkd" not in str(err.value) and "pip install" not in str(err.value)
    try:
        resolve_broker_kind("kafka")
    except UnknownBrokerKind as exc:  # funboost-kafka is not installed in this environment
        assert "pip install funboost-kafka" in str(exc)


def test_unknown_state_backend_hint_comes_from_the_same_list():
    from funboost.exceptions import StateBackendError
    from funboost.plugins.distributions import distribution_for_state_backend
    from funboost.state.base import resolve_state_backend_class
    assert distribution_for_state_backend("redis") == "funboost-redis"
    with pytest.raises(StateBackendError) as err:
        resolve_state_backend_class("no_such_backend")
    assert "pip install" not in str(err.value) and "installed:" in str(err.value)


def _pyproject_entry_points(path):
    try:
        import tomllib
    except ImportError:  # python < 3.11
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads(path.read_text())
    eps = data["project"].get("entry-points", {})
    return data["project"]["name"], set(eps.get("funboost.brokers", {})), set(eps.get("funboost.state", {}))


def test_the_shipped_distribution_list_matches_the_plugins_in_this_repository():
    from pathlib import Path
    from funboost.plugins.distributions import SHIPPED_DISTRIBUTIONS
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    if not plugins.is_dir():
        pytest.skip("not run from a checkout of the repository")
    listed = {d.name: d for d in SHIPPED_DISTRIBUTIONS}
    found = {}
    for pyproject in sorted(plugins.glob("funboost-*/pyproject.toml")):
        name, brokers, states = _pyproject_entry_points(pyproject)
        found[name] = (brokers, states)
        assert name in listed, f"{name} ships in plugins/ but is missing from SHIPPED_DISTRIBUTIONS"
        assert set(listed[name].broker_kinds) <= brokers, (name, listed[name].broker_kinds, brokers)
        assert set(listed[name].state_backends) <= states, (name, listed[name].state_backends, states)
    assert set(listed) <= set(found), f"listed but not in plugins/: {set(listed) - set(found)}"


def test_register_brokers_hook_is_called_through_pluggy_and_validated():
    from funboost.brokers.memory import MemoryBroker
    from funboost.plugins.manager import BrokerRegistry, call_register_brokers

    class GammaBroker(MemoryBroker):
        kind = "gamma_test"
        aliases = ()

    good = types.ModuleType("good_plugin")
    good.funboost_register_brokers = lambda registry: registry.register(GammaBroker)
    reg = BrokerRegistry()
    call_register_brokers(good, reg, "good_plugin")
    assert reg.resolve("gamma_test") is GammaBroker

    bad = types.ModuleType("bad_plugin")
    bad.funboost_register_brokers = lambda reg, extra: None  # argument names differ from the hookspec
    with pytest.raises(BrokerPluginError, match="funboost_register_brokers"):
        call_register_brokers(bad, BrokerRegistry(), "bad_plugin")


# ---------------------------------------------------------------- RunStatus / QueueFlag / eta / runnable
def test_records_store_run_status_as_plain_strings(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         msg_expire_seconds=0.001, is_using_rpc_mode=True,
                         function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(
                             is_save_status=True)))
    def f(x):
        return x

    r = f.publish({"x": 1}, task_options={"publish_time": time.time() - 60})
    f.consume()
    try:
        def expired():
            f.consumer.status_saver.flush()
            return f.query_statuses(limit=5)
        recs = wait_until(expired, 15)
    finally:
        f.stop_consume(5)
    assert recs[0]["task_id"] == r.task_id
    assert recs[0]["run_status"] == RunStatus.EXPIRED and type(recs[0]["run_status"]) is str


def test_queue_flags_are_stored_under_plain_names(qname):
    from funboost.flags import QueueFlag

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def f(x):
        return x

    f.pause()
    f.set_qps(5)
    flags = f.state_backend().get_flags(qname)
    assert flags == {"pause": True, "qps": 5}
    assert all(type(k) is str for k in flags)
    assert flags[QueueFlag.PAUSE] is True


def test_eta_parsing():
    import datetime as dt
    from funboost.eta import eta_to_timestamp, message_eta
    assert eta_to_timestamp(12.5) == 12.5 and eta_to_timestamp(None) is None
    d = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert eta_to_timestamp(d) == d.timestamp() == eta_to_timestamp(d.isoformat())
    assert eta_to_timestamp("2030-01-02 03:04:05") == dt.datetime(2030, 1, 2, 3, 4, 5).timestamp()
    with pytest.raises(ValueError, match="eta"):
        eta_to_timestamp("next tuesday")
    assert message_eta({"countdown": 5, "publish_time": 100.0}) == 105.0
    assert message_eta({"task_id": "x"}) is None


def test_is_runnable_and_wait_until_runnable_share_one_check(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False))
    def f(x):
        return x

    f.consume()
    try:
        c = f.consumer
        assert c.is_runnable() and c.wait_until_runnable()
        c.paused = True
        assert not c.is_runnable() and c.seconds_until_runnable_check() > 0
        stop = threading.Event()
        threading.Timer(0.1, stop.set).start()
        assert c.wait_until_runnable(stop) is False
        c.paused = False
    finally:
        f.stop_consume(5)
