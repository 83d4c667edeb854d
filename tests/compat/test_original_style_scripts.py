"""Scripts written in the original funboost's style (tests/compat/scripts), each run unchanged in its own
process against this project's packages; plus BrokerEnum's names against the original 55.0 list."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Optional

import pytest

from funboost import BoosterParams, BrokerEnum
from funboost.plugins.manager import resolve_broker_kind

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from original55 import ORIGINAL_55_BROKER_ENUM_NAMES  # noqa: E402


def run_script(name: str, *args: str, cwd: Path, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FUNBOOST_DATA_DIR": str(cwd), "FUNBOOST_SQLITE_DIR": str(cwd), **(env or {})}  # nothing outside tmp
    return subprocess.run([sys.executable, str(HERE / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_export_and_every_55_booster_params_field(tmp_path: Path) -> None:
    proc = run_script("exports_and_fields.py", str(HERE), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_foreign_message_consumer_fct_and_publisher_methods(tmp_path: Path, kind: str) -> None:
    queue = f"compat_{kind}_{uuid.uuid4().hex[:8]}"
    proc = run_script("consume_memory_and_sqlite.py", kind, queue, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


@pytest.mark.parametrize("name", ORIGINAL_55_BROKER_ENUM_NAMES)
def test_broker_enum_has_every_original_name(name: str) -> None:
    value = getattr(BrokerEnum, name)
    try:
        resolve_broker_kind(value)
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        text = str(exc)
        assert "pip install funboost-" in text or "no plugin" in text, text
    else:  # an installed kind: usable in BoosterParams as it is
        BoosterParams(queue_name=f"enum_{name}", broker_kind=value)


def test_custom_brokers_of_publisher_and_consumer_classes(tmp_path: Path) -> None:
    """register_custom_broker with AbstractPublisher / AbstractConsumer subclasses, and BrokerEnum.EMPTY with
    EmptyPublisher / EmptyConsumer subclasses: publish, count, clear, consume, requeue, dead-letter, stop."""
    proc = run_script("custom_brokers.py", uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_aio_async_result_in_asyncio_code(tmp_path: Path) -> None:
    proc = run_script("aio_async_result.py", uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_method_consumers_and_specify_async_loop(tmp_path: Path) -> None:
    proc = run_script("methods_and_async_loop.py", uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_booster_discovery_and_helpers(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    proc = run_script("discovery_and_helpers.py", str(project), uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_no_shipped_kind_is_listed_as_without_plugin() -> None:
    from funboost.plugins.distributions import KINDS_WITHOUT_PLUGIN, SHIPPED_DISTRIBUTIONS
    shipped = {k for d in SHIPPED_DISTRIBUTIONS for k in d.broker_kinds}
    assert not set(KINDS_WITHOUT_PLUGIN) & shipped


def test_pools_get_future_aps_scheduler_and_result_from_mongo(tmp_path: Path) -> None:
    proc = run_script("pools_future_and_scheduler.py", uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


FUNBOOST_CONFIG_PY = """
class BrokerConnConfig:
    REDIS_HOST = '127.0.0.1'
    REDIS_USERNAME = ''
    REDIS_PASSWORD = ''
    REDIS_PORT = 6379
    REDIS_DB = 3
    REDIS_DB_FILTER_AND_RPC_RESULT = 8
    RABBITMQ_HOST = '127.0.0.1'
    SQLLITE_QUEUES_PATH = '/sqllite_queues'


class FunboostCommonConfig:
    TIMEZONE = 'Asia/Shanghai'
"""


def test_funboost_config_py_is_picked_up(tmp_path: Path) -> None:
    try:
        import redis
        redis.Redis.from_url("redis://127.0.0.1:6379/3", socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - not installed, or no server
        from funboost.testing import require_service
        require_service(f"redis unavailable: {exc}")
    project = tmp_path / "project"
    project.mkdir()
    (project / "funboost_config.py").write_text(FUNBOOST_CONFIG_PY)
    env = {"PYTHONPATH": str(project), "FUNBOOST_RABBITMQ_URL": "amqp://from-the-environment/"}
    for var in ("FUNBOOST_REDIS_URL", "FUNBOOST_STATE_REDIS_URL", "FUNBOOST_SQLITE_DIR", "FUNBOOST_NO_CONFIG_FILE",
                "FUNBOOST_TIMEZONE", "FUNBOOST_STATE_BACKEND"):
        env[var] = ""
    proc = run_script("funboost_config_pickup.py", uuid.uuid4().hex[:8], str(project), cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_fabric_deploy_to_a_loopback_ssh_server(tmp_path: Path) -> None:
    pytest.importorskip("paramiko", reason='fabric_deploy needs the deploy extra: pip install "funboost-core[deploy]"')
    from funboost.testing import require_service
    from funboost.testing.sshd import loopback_sshd, unavailable_reason
    reason = unavailable_reason()
    if reason:
        require_service(reason)
    project = tmp_path / "project"
    project.mkdir()
    (project / "deploy_demo.py").write_text(
        "from funboost import boost, BoosterParams, BrokerEnum\n"
        f"@boost(BoosterParams(queue_name='deploy_demo_{uuid.uuid4().hex[:8]}', broker_kind=BrokerEnum.SQLITE_QUEUE,\n"
        "                     is_using_rpc_mode=True))\n"
        "def add(x, y):\n    return x + y\n")
    with loopback_sshd(tmp_path / "sshd") as server:
        proc = run_script("fabric_deploy_loopback.py", str(project), str(server.port), server.key_filename,
                          server.known_hosts, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_record_names_instance_method_helper_and_fields_of_earlier_versions(tmp_path: Path) -> None:
    """The original's record hook example (its attribute names), ClsHelper for instance methods,
    msg_expire_senconds / consumin_function_decorator / retry_interval, do_not_run_by_specify_time."""
    proc = run_script("status_names_and_old_fields.py", uuid.uuid4().hex[:8], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
