"""Quick-start demo on the embedded default broker (sqlite): publishes 20 tasks and consumes them.

    python3 scripts/demo.py

On first run it creates .venv-demo and installs funboost-core and funboost-sqlite from this checkout
into it, then re-runs itself there. Nothing else is needed: no server, no config file.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-demo"


def _bootstrap() -> None:
    py = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not py.exists():
        print("creating .venv-demo and installing funboost-core + funboost-sqlite ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "-e", str(ROOT / "core"),
                               "-e", str(ROOT / "plugins" / "funboost-sqlite")])
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


try:
    import funboost  # noqa: F401
    import funboost_sqlite  # noqa: F401
except ImportError:
    _bootstrap()

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# keep the demo's queue and state out of the user's real data directory; removed when the demo ends
DATA_DIR = None
if "FUNBOOST_DATA_DIR" not in os.environ:
    DATA_DIR = os.environ["FUNBOOST_DATA_DIR"] = tempfile.mkdtemp(prefix="funboost-demo-")

from funboost import BoosterParams, BrokerEnum, boost, fct  # noqa: E402

done = []


@boost(BoosterParams(queue_name="demo_add", broker_kind=BrokerEnum.SQLITE_QUEUE, qps=10, concurrent_num=5,
                     is_using_rpc_mode=True))
def add(x: int, y: int = 10) -> int:
    print(f"  ran task {fct.task_id}  add({x}, {y}) = {x + y}", flush=True)
    done.append(x)
    return x + y


def main() -> int:
    print("plain call still runs locally: add(1, 2) =", add(1, 2))
    done.clear()
    print("publishing 20 tasks to the sqlite queue 'demo_add' ...")
    results = [add.push(i, y=i) for i in range(20)]
    print(f"queue now holds {add.get_message_count()} messages; consuming at qps=10 ...")
    add.consume()
    print("result of the last task via RPC:", results[-1].get(timeout=30))
    deadline = time.time() + 30
    while len(done) < 20 and time.time() < deadline:
        time.sleep(0.05)
    add.stop_consume()
    print(f"done: {len(done)} of 20 tasks consumed; {add.get_message_count()} left in the queue")
    return 0 if len(done) == 20 else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        add.broker.close()
        if DATA_DIR is not None:
            shutil.rmtree(DATA_DIR, ignore_errors=True)
            print(f"removed the demo's temporary data folder {DATA_DIR}")
    sys.exit(code)
