"""The NAMEKO kind end to end: README example, a plain nameko caller, RPC, retries, filter, pause,
ExceptionForRequeue, SIGKILL of the service process (N = 1000) and of the funboost process,
multi_process_consume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy

from funboost import AsyncResult, BoosterParams, TaskOptions, boost
from funboost.exceptions import ExceptionForRequeue
from funboost.testing import frameworks as fw
from funboost.testing import wait_until

from conftest import AMQP_URI

HERE = os.path.dirname(os.path.abspath(__file__))


def make(queue: str, **kw) -> BoosterParams:
    return fw.framework_params("NAMEKO", queue, {"amqp_uri": AMQP_URI}, **kw)


def service_pids(queue: str) -> list[int]:
    """The nameko service processes of ``queue`` (their command line carries the queue's spec)."""
    out = subprocess.run(["pgrep", "-f", f"funboost_nameko.service .*{queue}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_readme_example(queue_name, consumers):
    # the first call waits for the service process to start; a countdown is held by funboost (nameko has none)
    fw.check_readme_example(make, queue_name, consumers, first_timeout=60)
    assert len(service_pids(queue_name)) == 1
    assert "eventlet" not in sys.modules or not _patched()  # this process was never monkey-patched


def _patched() -> bool:
    import eventlet.patcher
    return eventlet.patcher.is_monkey_patched("socket")


def test_plain_nameko_caller_gets_the_reply_and_the_error(queue_name, consumers):
    @boost(make(queue_name, is_using_rpc_mode=True, max_retry_times=1, is_print_detail_exception=False))
    def div(x, y=1):
        return x / y

    consumers(div.consume())
    div.push(0, 1).get(timeout=60)  # the service runs
    with ClusterRpcProxy({"AMQP_URI": AMQP_URI}) as rpc:
        reply = getattr(rpc, queue_name).run.call_async(x=8, y=2)
        assert reply.result() == 4.0
        # the funboost task id is the call's correlation id
        assert AsyncResult(reply.reply_event.correlation_id, booster=div).get(timeout=10) == 4.0
        with pytest.raises(RemoteError) as err:
            getattr(rpc, queue_name).run(x=1, y=0)
        assert "ZeroDivisionError" in str(err.value)
        # a call funboost does not run (arguments that do not fit: dead-lettered) is an error for the
        # caller, not a None that reads as the function's result
        for bad in ((), {"z": 1}):
            with pytest.raises(RemoteError) as err:
                getattr(rpc, queue_name).run(*(bad if isinstance(bad, tuple) else ()),
                                             **(bad if isinstance(bad, dict) else {}))
            assert "NotRun" in str(err.value), err.value


def test_retries_are_funboosts(queue_name, consumers):
    # a second delivery of the failed request would have run within a second (none may come)
    fw.check_retries_are_funboosts(make, queue_name, consumers, first_timeout=60, no_more_runs_for=1.0)


def test_filter_expiry_and_requeue(queue_name, consumers):
    ran: list = []
    seen: dict[int, int] = {}

    @boost(make(queue_name, do_task_filtering=True, is_using_rpc_mode=True))
    def f(x):
        seen[x] = seen.get(x, 0) + 1
        if x == 99 and seen[x] == 1:
            raise ExceptionForRequeue("again")
        ran.append(x)
        return x

    consumers(f.consume())
    f.push(1).get(timeout=60)
    f.push(1)
    f.publish({"x": 2}, task_options=TaskOptions(msg_expire_seconds=0.01, countdown=0.5))  # expired when due
    f.push(99)
    wait_until(lambda: 99 in ran, 30, message="requeued task ran again")
    f.push(3).get(timeout=30)
    assert sorted(ran) == [1, 3, 99] and seen[99] == 2


def test_pause_and_resume(queue_name, consumers):
    fw.check_pause_and_resume(make, queue_name, consumers, quiet=2.0, first_timeout=60)


def test_count_and_clear(queue_name):
    fw.check_count_and_clear(make, queue_name)


def test_sigkill_of_the_service_process_loses_nothing(queue_name, consumers):
    """N = 1000 tasks; the nameko service process is SIGKILLed mid-run: the funboost process starts it again
    and RabbitMQ redelivers what it held unacked. Every task id runs (at-least-once)."""
    n = 1000
    done: dict[int, int] = {}
    lock = threading.Lock()

    @boost(make(queue_name, concurrent_num=8))
    def work(x):
        time.sleep(0.002)
        with lock:
            done[x] = done.get(x, 0) + 1

    for i in range(n):
        work.push(i)
    consumers(work.consume())
    wait_until(lambda: len(done) >= 100, 60, message="100 done")
    pids = service_pids(queue_name)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: len(done) == n, 120, message=f"all {n} task ids ran")
    assert service_pids(queue_name) and service_pids(queue_name) != pids  # started again


def _start_worker(queue: str, marker_dir: str, hold: float, processes: int = 0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "_crash_worker.py"), queue, marker_dir, str(hold),
                          str(processes)], stdout=subprocess.PIPE, text=True, cwd=HERE)
    assert p.stdout is not None and p.stdout.readline().strip() == "consuming"
    return p


_markers = fw.markers


def test_sigkill_of_the_funboost_process_redelivers(queue_name, tmp_path):
    """The consuming process is SIGKILLed with tasks running: its service process exits without acking,
    a second consumer runs the same tasks."""
    sys.path.insert(0, HERE)
    first = _start_worker(queue_name, str(tmp_path), 120)
    try:
        from funboost import BoostersManager  # noqa: F401
        from funboost_nameko import NamekoBroker, NamekoOptions
        pub = NamekoBroker(queue_name, NamekoOptions(amqp_uri=AMQP_URI))
        import json
        from funboost.plugins.broker import OutgoingMessage
        pub.publish([OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": f"k{i}"}}), task_id=f"k{i}")
                     for i in range(2)])
        wait_until(lambda: len(_markers(str(tmp_path), "started.")) == 2, 60, message="both started")
        service = service_pids(queue_name)
        first.kill()
        first.wait()
        wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and
                                   open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in service),
                   30, message="service process exited after its funboost process died")
        second = _start_worker(queue_name, str(tmp_path), 0)
        try:
            wait_until(lambda: len(_markers(str(tmp_path), "done.")) == 2, 60, message="both ran again")
        finally:
            second.kill()
            second.wait()
        pub.close()
    finally:
        if first.poll() is None:
            first.kill()


def test_sigterm_acks_the_tasks_that_finish_during_the_stop(queue_name, tmp_path):
    """A graceful SIGTERM with two tasks running: both finish and are acked (nameko 2 used to close its AMQP
    connection before the running workers' acks, so they ran again in the next consumer); the two
    requests still waiting in the queue run in the next consumer, once each."""
    import json
    from funboost.plugins.broker import OutgoingMessage
    from funboost_nameko import NamekoBroker, NamekoOptions
    marker_dir = str(tmp_path)
    first = _start_worker(queue_name, marker_dir, 3)
    pub = NamekoBroker(queue_name, NamekoOptions(amqp_uri=AMQP_URI))
    try:
        # concurrent_num=2 (the service's prefetch): x=0 and x=1 run, x=2 and x=3 wait in RabbitMQ
        pub.publish([OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": f"t{i}"}}), task_id=f"t{i}")
                     for i in range(4)])
        wait_until(lambda: len(_markers(marker_dir, "started.")) == 2, 60, message="two tasks running")
        assert sorted(_markers(marker_dir, "started.")) == [f"started.{x}.{first.pid}" for x in (0, 1)]
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
        assert sorted(_markers(marker_dir, "done.")) == ["done.0", "done.1"]  # they finished during the stop
        second = _start_worker(queue_name, marker_dir, 0)
        try:
            # requeued requests go back to their place at the head of the queue: had x=0 or x=1 come back,
            # the second consumer would have started it before x=2 and x=3 could both finish
            wait_until(lambda: {"done.2", "done.3"} <= set(_markers(marker_dir, "done.")), 60,
                       message="the waiting requests ran in the next consumer")
            assert sorted(m for m in _markers(marker_dir, "started.") if m.endswith(f".{second.pid}")) == \
                [f"started.{x}.{second.pid}" for x in (2, 3)]
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        pub.close()
        if first.poll() is None:
            first.kill()
            first.wait()


def test_multi_process_consume(queue_name, tmp_path):
    p = _start_worker(queue_name, str(tmp_path), 0.3, processes=2)
    try:
        from funboost_nameko import NamekoBroker, NamekoOptions
        import json
        from funboost.plugins.broker import OutgoingMessage
        pub = NamekoBroker(queue_name, NamekoOptions(amqp_uri=AMQP_URI))
        pub.publish([OutgoingMessage(body=json.dumps({"x": i}), task_id=None) for i in range(20)])
        wait_until(lambda: len(_markers(str(tmp_path), "done.")) == 20, 60, message="20 done")
        pids = {m.rsplit(".", 1)[1] for m in _markers(str(tmp_path), "started.")}
        assert len(pids) == 2  # two funboost processes ran the tasks
        assert len(service_pids(queue_name)) == 2  # each with its own nameko service process
        pub.close()
    finally:
        p.send_signal(signal.SIGTERM)  # forwarded to both children, which stop their service processes
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def test_options_validate(monkeypatch):
    from pydantic import ValidationError
    from funboost_nameko import NamekoOptions
    with pytest.raises(ValidationError):
        NamekoOptions(amqp_uri="redis://x")
    with pytest.raises(ValidationError):
        NamekoOptions(service_config={"max_workers": 3})
    with pytest.raises(ValidationError):
        NamekoOptions(method_name="not a name")
    monkeypatch.setenv("FUNBOOST_NAMEKO_AMQP_URI", "amqp://u:p@h:1/v")
    monkeypatch.setenv("FUNBOOST_NAMEKO_SERVICE_CONFIG", '{"HEARTBEAT": 30}')
    cfg = NamekoOptions(service_config={"SERIALIZER": "json"}).nameko_config(0)
    assert cfg == {"HEARTBEAT": 30, "SERIALIZER": "json", "AMQP_URI": "amqp://u:p@h:1/v",
                   "rpc_exchange": "nameko-rpc", "max_workers": 1}
