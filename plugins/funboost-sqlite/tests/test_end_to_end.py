"""Through the engine: @boost(BoosterParams(queue_name=..., broker_kind="SQLITE_QUEUE")) and f.consume()."""
import subprocess
import sys
import threading

from funboost import BoosterParams, boost
from funboost.testing.workers import ConsumerProcess, recording_publisher, stop_all

from funboost_sqlite import SqliteBroker

from conftest import wait_for


def test_sqlite_is_the_kind_of_sqlite_queue(queue_name):
    @boost(BoosterParams(queue_name=queue_name, broker_kind="SQLITE_QUEUE", state_backend="memory",
                         log_to_console=False))
    def f(x: int) -> None:
        pass

    assert isinstance(f.broker, SqliteBroker)
    for i in range(3):
        f.push(i)
    assert f.get_message_count() == 3
    assert f.clear() == 3


def test_consume_in_process(queue_name):
    done = set()
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="sqlite", concurrent_num=10, state_backend="memory",
                         log_to_console=False))
    def f(x: int) -> None:
        with lock:
            done.add(x)

    for i in range(200):
        f.push(i)
    f.consume()
    try:
        wait_for(lambda: len(done) == 200, what="200 tasks")
        wait_for(lambda: f.queue_size().total == 0, what="all acked")
    finally:
        f.stop_consume(10)


def test_sigkill_one_of_two_boost_consumers_loses_nothing(queue_name, tmp_path):
    n = 300

    work = recording_publisher("SQLITE_QUEUE", queue_name, {})
    for i in range(n):
        work.push(i)
    victim = survivor = None
    try:
        victim = ConsumerProcess("SQLITE_QUEUE", queue_name, {}, str(tmp_path / "b0.out"), concurrency=8,
                                 task_seconds=0.01)
        survivor = ConsumerProcess("SQLITE_QUEUE", queue_name, {}, str(tmp_path / "b1.out"), concurrency=8,
                                   task_seconds=0.01)
        wait_for(lambda: victim.done() >= 30, timeout=60, what="victim ran some tasks")
        victim.sigkill()
        wait_for(lambda: work.queue_size().total == 0, timeout=90, what="queue drained by the survivor")
    finally:
        stop_all([victim, survivor])
    ran = set(victim.runs()) | set(survivor.runs())
    assert ran == set(range(n)), f"lost: {sorted(set(range(n)) - ran)[:10]}"


def _mp_task_module(tmp_path, queue_name):
    """multi_process_consume needs the booster importable in the children (spawn) or inherited (fork)."""
    mod = tmp_path / f"mp_{queue_name}.py"
    mod.write_text(
        "import os\n"
        "from funboost import BoosterParams, boost\n"
        f"@boost(BoosterParams(queue_name={queue_name!r}, broker_kind='SQLITE_QUEUE', concurrent_num=4,\n"
        "                     state_backend='memory', log_to_console=False))\n"
        "def work(i: int) -> None:\n"
        f"    with open({str(tmp_path / 'mp.out')!r}, 'a') as f:\n"
        "        f.write(f'{i} {os.getpid()}\\n')\n")
    return mod


def test_multi_process_consume_after_parent_used_the_database(queue_name, tmp_path):
    """The parent publishes (its connection is open) and then forks consumers: every child must open its
    own connection and consume as its own consumer."""
    mod = _mp_task_module(tmp_path, queue_name)
    code = (
        "import sys, time, os\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"from mp_{queue_name} import work\n"
        "for i in range(200):\n"
        "    work.push(i)\n"
        "procs = work.multi_process_consume(2)\n"
        "deadline = time.time() + 60\n"
        "while work.queue_size().total and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('LEFT', work.queue_size().total, flush=True)\n"
        "os._exit(0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LEFT 0" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    lines = (tmp_path / "mp.out").read_text().split("\n")
    done = {int(x.split()[0]) for x in lines if x.strip()}
    assert done == set(range(200))
    assert mod.exists()
