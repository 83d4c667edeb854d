"""Child-process side of the control-plane tests (run as a script; holds no tests itself).

    python test_control_plane_worker.py '<json config>'

mode "consume": consume the queue until the file ``stop_file`` exists.
mode "schedule": run an ApsJobAdder on a shared job store until ``until`` (epoch), then print
``fired <n>``: how many job runs this process executed.

The task appends ``start <x> <time>`` / ``end <x> <time>`` lines to ``log_file`` (O_APPEND: lines from
concurrent threads do not interleave).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

CFG: dict = {}


def _log(line: str) -> None:
    with open(CFG["log_file"], "a") as fh:
        fh.write(line + "\n")


def task(x: int, sleep: float = 0.0, fail: bool = False) -> int:
    _log(f"start {x} {time.time():.4f}")
    deadline = time.monotonic() + sleep
    while time.monotonic() < deadline:  # short steps: a remote kill interrupts between them
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
    if fail:
        raise ValueError(f"bad value {x}")
    _log(f"end {x} {time.time():.4f}")
    return x * 2


def make_booster(cfg: dict) -> Any:
    from funboost import BoosterParams, boost
    from funboost.params import FunctionResultStatusPersistenceConfig

    params = BoosterParams(
        queue_name=cfg["queue"], broker_kind=cfg["broker"], state_backend=cfg["state"],
        is_using_rpc_mode=cfg.get("rpc", False), concurrent_num=cfg.get("concurrency", 4),
        is_support_remote_kill_task=cfg.get("kill", False), max_retry_times=0, log_to_console=False,
        function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(
            is_save_status=cfg.get("status", False), is_save_result=cfg.get("status", False)))
    return boost(params)(task)


def main() -> None:
    CFG.update(json.loads(sys.argv[1]))
    f = make_booster(CFG)
    if CFG["mode"] == "consume":
        f.consume()
        while not os.path.exists(CFG["stop_file"]):
            time.sleep(0.1)
        f.stop_consume(10)
    elif CFG["mode"] == "schedule":
        from apscheduler.events import EVENT_JOB_EXECUTED

        from funboost import ApsJobAdder

        adder = ApsJobAdder(f, job_store_kind=CFG["store"])
        fired = []
        adder.aps_obj.add_listener(lambda ev: fired.append(ev.scheduled_run_time), EVENT_JOB_EXECUTED)
        while time.time() < CFG["until"]:
            time.sleep(0.1)
        adder.shutdown()
        print("fired", len(fired), flush=True)
    sys.stdout.flush()


# ---------------------------------------------------------------------- parent-side helpers
STACKS = {  # name -> (broker kind, state backend)
    "sqlite": ("sqlite_queue", "sqlite"),
    "redis": ("redis_ack_able", "redis"),
    "postgres": ("sqlite_queue", "sqlalchemy"),
}
PG_URL = os.environ.get("FUNBOOST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def setup_env() -> None:
    """Parent and children share one data dir (sqlite broker + state) and never linger at exit."""
    import tempfile
    os.environ.setdefault("FUNBOOST_DATA_DIR", tempfile.mkdtemp(prefix="funboost-control-plane-"))
    os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
    os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")
    os.environ.setdefault("FUNBOOST_STATE_SQLALCHEMY_URL", PG_URL)


def require_stack(name: str) -> tuple[str, str]:
    """Skip (or fail under FUNBOOST_REQUIRE_SERVICES=1) when the stack's services are missing."""
    from funboost.state.base import resolve_state_backend_class
    from funboost.testing import require_service
    broker, state = STACKS[name]
    try:
        from funboost.plugins.manager import resolve_broker_kind
        resolve_broker_kind(broker)
        cls = resolve_state_backend_class(state)
    except Exception as exc:
        require_service(f"{name} stack not installed: {exc}")
    reason = cls.check_available(os.environ.get(f"FUNBOOST_STATE_{state.upper()}_URL"))
    if reason:
        require_service(reason)
    return broker, state


class Child:
    """A worker subprocess; ``stop()`` asks it to finish (stop file), then kills it if it does not."""

    def __init__(self, tmp: Any, **cfg: Any) -> None:
        import subprocess
        import uuid
        self.tmp = tmp
        uid = uuid.uuid4().hex[:8]
        cfg.setdefault("log_file", str(tmp / "task.log"))
        cfg.setdefault("stop_file", str(tmp / f"stop_{uid}"))
        self.cfg = cfg
        self.out = open(tmp / f"child_{uid}.out", "w+")
        self.err_path = tmp / f"child_{uid}.err"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(cfg)], stdout=self.out,
                                     stderr=self.err, env=dict(os.environ))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20) -> str:
        import subprocess
        open(self.cfg["stop_file"], "w").close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.stdout()

    def stdout(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    def stderr(self) -> str:
        self.err.flush()
        return self.err_path.read_text()


def read_log(path: Any) -> list[tuple[str, int, float]]:
    """(event, x, time) lines of the task log."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), float(parts[2])))
    return out


if __name__ == "__main__":
    main()
