"""Scenarios shared by the tests of the "frameworks as brokers" plugins (celery, dramatiq, huey, rq, nameko).

Each of these plugins runs funboost's runner inside another framework's worker, and their suites check
the same end-to-end behaviour: the README example, funboost's own retries (none by the framework on
top), filter and expiry, pause, count and clear, ExceptionForRequeue, and workers SIGKILLed mid-run. This
module holds that behaviour once instead of one copy per plugin.

A scenario takes a *params factory*, ``params(queue_name, **booster_params) -> BoosterParams`` (the
plugin's kind and broker settings bound, see :func:`framework_params`), and the test's fixtures. It
returns what a plugin needs for its framework-specific checks (a booster, a result), which stay in the
plugin's own tests. The crash scenarios take ``start_worker(hold) -> Popen``: the plugin's worker
script, which writes ``started.<x>.<pid>`` and ``done.<x>`` marker files into the test's directory.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import pytest

from funboost import BoosterParams, ExceptionForRequeue, TaskOptions, boost
from funboost.plugins.broker import OutgoingMessage
from funboost.result import RemoteTaskError
from funboost.testing import body_text, fetch_until, wait_until

__all__ = ["ParamsFactory", "framework_params", "url_fixture", "params_fixture", "unique_queue_name",
           "registered_cleanup", "drop_with_dead_letter", "stays",
           "start_script", "stop_processes", "markers", "check_readme_example", "check_count_and_clear",
           "check_retries_are_funboosts", "check_filter_and_expiry", "check_pause_and_resume",
           "check_requeue_then_dead_letter", "check_priority_orders", "check_priority_is_dropped",
           "check_pulled_message_stays_with_its_holder", "check_killed_workers_task_runs_again",
           "check_long_task_never_handed_out_twice", "check_sigkill_mid_run_loses_none"]

#: ``params(queue_name, **booster_params) -> BoosterParams`` for the plugin's kind and broker settings
ParamsFactory = Callable[..., BoosterParams]
Booster = Any
PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------------------- set-up
def framework_params(kind: str, queue: str, broker_cfg: dict, **kw: Any) -> BoosterParams:
    """BoosterParams of ``kind`` for ``queue`` as the tests use them: memory state backend, no console
    log, ``broker_cfg`` as broker_exclusive_config (on top of an optional ``cfg=`` of extra options)."""
    kw.setdefault("state_backend", "memory")
    kw.setdefault("log_to_console", False)
    cfg = dict(kw.pop("cfg", {}), **broker_cfg)
    return BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=cfg, **kw)


def url_fixture(urls: dict[str, str], check: Callable[[str], None]) -> Any:
    """A ``broker_url`` fixture (``broker_url = url_fixture(URLS, check)`` in a conftest.py) parametrised over
    ``urls`` (family name -> url, the test ids), each ``check(url)``-ed (skipped when unavailable) first."""
    @pytest.fixture(params=list(urls))
    def broker_url(request: Any) -> str:
        url = urls[request.param]
        check(url)
        return url
    return broker_url


def params_fixture(kind: str, url_key: str = "broker_url") -> Any:
    """A ``params`` fixture (``params = params_fixture("CELERY")``) for suites with the fixtures
    ``broker_url``, ``queue_name`` and ``cleanup_queues`` (url, queue): a :data:`ParamsFactory` on the
    test's broker (``{url_key: broker_url}``), the test's queue registered for cleanup."""
    @pytest.fixture
    def params(broker_url: str, queue_name: str, cleanup_queues: Callable[[str, str], None]) -> ParamsFactory:
        cleanup_queues(broker_url, queue_name)
        return partial(framework_params, kind, broker_cfg={url_key: broker_url})
    return params


def unique_queue_name(prefix: str) -> str:
    """``<prefix>_<12 hex digits>``: a queue of the test's own (only [A-Za-z0-9_], which every framework keeps)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def registered_cleanup(drop: Callable[..., None]) -> Iterator[Callable[..., None]]:
    """The body of a cleanup fixture (``yield from registered_cleanup(drop)``): the test registers the
    arguments of ``drop`` (e.g. a url and a queue); each registration is dropped when the test ends."""
    todo: list[tuple] = []
    yield lambda *args: todo.append(args)
    for args in todo:
        drop(*args)


def drop_with_dead_letter(queue: str, open_broker: Callable[[str], Any], drop: Callable[[Any], Any], *,
                          ignore_errors: bool = True) -> None:
    """``drop(broker)`` for ``queue`` and its dead-letter queue ``<queue>_dlx`` (a cleanup: errors of a queue
    that was never declared are ignored unless ``ignore_errors`` is False), closing each broker."""
    for name in (queue, f"{queue}_dlx"):
        b = open_broker(name)
        try:
            drop(b)
        except Exception:
            if not ignore_errors:
                raise
        finally:
            b.close()


def stays(predicate: Callable[[], Any], seconds: float, message: str, interval: float = 0.05) -> None:
    """Assert that ``predicate`` holds for ``seconds`` on end (something that must *not* happen meanwhile)."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), f"no longer true within {seconds}s: {message}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


# ---------------------------------------------------------------------------------------- processes
def start_script(here: PathLike, script: str, *args: Any, **popen: Any) -> subprocess.Popen:
    """Run ``<here>/<script> args...`` in a new Python with ``here`` on its path (output dropped unless
    ``popen`` says otherwise)."""
    here = os.fspath(here)
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, os.path.join(here, script), *map(str, args)], env=env, **popen)


def stop_processes(*procs: subprocess.Popen) -> None:
    """SIGKILL each process still running and reap it."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def markers(path: PathLike, prefix: str) -> list[str]:
    """The names of the marker files in ``path`` starting with ``prefix``, sorted."""
    return sorted(p.name for p in Path(path).iterdir() if p.name.startswith(prefix))


# ---------------------------------------------------------------------------------------- in-process scenarios
def check_readme_example(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None], *,
                         first_timeout: float = 30, min_countdown_delay: float = 1.4) -> tuple[Booster, str]:
    """The README example: a plain call, push, publish with a task id, a countdown, push_many. Returns the
    booster and the task id it published under, for the framework's own view of them."""
    @boost(params(queue_name, is_using_rpc_mode=True, concurrent_num=4))
    def add(x, y):
        return x + y

    assert add(1, 2) == 3  # a plain call is unchanged
    consumers(add.consume())
    assert add.push(1, y=2).get(timeout=first_timeout) == 3
    tid = f"t1-{uuid.uuid4().hex}"
    r = add.publish({"x": 1, "y": 2}, task_id=tid)
    assert r.task_id == tid and r.get(timeout=30) == 3
    t0 = time.time()
    assert add.publish({"x": 2, "y": 2}, task_options=TaskOptions(countdown=1.5)).get(timeout=30) == 4
    assert time.time() - t0 >= min_countdown_delay
    results = add.push_many([(i, i) for i in range(20)])
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
    return add, tid


def check_count_and_clear(params: ParamsFactory, queue_name: str) -> None:
    """Seven waiting messages are counted, cleared (clear returns 7) and gone."""
    @boost(params(queue_name))
    def f(x):
        return x

    for i in range(7):
        f.push(i)
    wait_until(lambda: f.get_message_count() == 7, 10, message="7 waiting")
    assert f.clear() == 7
    assert f.get_message_count() == 0


def check_retries_are_funboosts(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None], *,
                                first_timeout: float = 30, no_more_runs_for: float = 0) -> tuple[Booster, Any]:
    """max_retry_times=2 is funboost's: a task failing twice succeeds on its third run, one failing for good
    runs three times and fails; the framework runs nothing more (watched for ``no_more_runs_for`` seconds
    where a framework retry or a second delivery would take a while to show). Returns the booster and the
    failed task's result."""
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @boost(params(queue_name, is_using_rpc_mode=True, max_retry_times=2, is_print_detail_exception=False))
    def flaky(key, fail_times):
        with lock:
            calls[key] = calls.get(key, 0) + 1
            n = calls[key]
        if n <= fail_times:
            raise ValueError(f"attempt {n}")
        return n

    consumers(flaky.consume())
    assert flaky.push("a", 2).get(timeout=first_timeout) == 3
    r = flaky.push("b", 10)
    with pytest.raises(RemoteTaskError):
        r.get(timeout=30)
    assert r.wait()["run_times"] == 3
    assert calls == {"a": 3, "b": 3}
    stays(lambda: calls == {"a": 3, "b": 3}, no_more_runs_for, "no run after the failed task's third")
    return flaky, r


def check_filter_and_expiry(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None]) -> None:
    """do_task_filtering and msg_expire_seconds apply under the framework: a repeat is filtered, an old
    message expires, neither runs; the status of a run task is 'finish'."""
    ran: list[int] = []

    @boost(params(queue_name, do_task_filtering=True, is_using_rpc_mode=True, msg_expire_seconds=30))
    def f(x):
        ran.append(x)
        return x

    consumers(f.consume())
    first = f.push(1)
    assert first.get(timeout=30) == 1
    assert first.wait(30)["run_status"] == "finish"
    assert f.push(1).wait(30)["run_status"] == "filtered"
    old = f.publish({"x": 2}, task_options=TaskOptions(publish_time=time.time() - 100)).wait(30)
    assert old["run_status"] == "expired"
    assert f.push(3).get(timeout=30) == 3
    assert ran == [1, 3]


def check_pause_and_resume(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None], *,
                           stopped: Optional[Callable[[Booster], Any]] = None,
                           published: Optional[Callable[[Booster], None]] = None,
                           while_paused: Optional[Callable[[Booster], None]] = None,
                           quiet: float = 1.5, first_timeout: float = 30, **kw: Any) -> None:
    """pause(): once the consumer sees the flag (and ``stopped(booster)`` is true: the framework's worker was
    told to take nothing), three tasks published (then ``published(booster)``) do not run for ``quiet``
    seconds (then ``while_paused(booster)``); after resume() they all run."""
    ran: list[int] = []

    @boost(params(queue_name, is_using_rpc_mode=True, **kw))
    def f(x):
        ran.append(x)
        return x

    consumers(f.consume())
    assert f.push(0).get(timeout=first_timeout) == 0
    f.pause()
    wait_until(lambda: f.consumer.paused, 10, message="consumer sees the pause flag")
    if stopped is not None:
        wait_until(lambda: stopped(f), 10, message="the framework's worker takes nothing for the queue")
    rs = [f.push(i) for i in range(1, 4)]
    if published is not None:
        published(f)
    stays(lambda: ran == [0], quiet, "nothing runs while paused")
    if while_paused is not None:
        while_paused(f)
    f.resume()
    for r in rs:
        r.wait(30)
    assert sorted(ran) == [0, 1, 2, 3]


def check_requeue_then_dead_letter(params: ParamsFactory, queue_name: str,
                                   consumers: Callable[[Any], None]) -> Booster:
    """ExceptionForRequeue: a task raising it once runs again and succeeds; one raising it every time runs
    1 + max_requeue_times (3) times and reaches the dead-letter queue with the reason. Returns the booster."""
    calls: list[str] = []

    @boost(params(queue_name, is_using_rpc_mode=True, max_retry_times=0, max_requeue_times=3))
    def f(x):
        calls.append(x)
        if x == "once" and calls.count("once") == 1:
            raise ExceptionForRequeue("not now")
        if x == "forever":
            raise ExceptionForRequeue("never")
        return x

    consumers(f.consume())
    assert f.push("once").get(timeout=30) == "once"
    assert calls.count("once") == 2
    f.push("forever")
    dlx = f.broker.dead_letter_broker()
    [d] = fetch_until(dlx, 1, timeout=30)
    assert calls.count("forever") == 4  # the first run and max_requeue_times more
    assert "max_requeue_times" in json.loads(body_text(d))["extra"]["dead_letter_reason"]
    dlx.ack([d])
    return f


def check_priority_orders(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None],
                          **kw: Any) -> None:
    """TaskOptions(priority=...) reaches a broker that supports it: three tasks of priority 9 published after
    three of priority 0 (all waiting before the consumer starts) run first."""
    order: list[int] = []

    @boost(params(queue_name, concurrent_num=1, is_using_rpc_mode=True, **kw))
    def job(i):
        order.append(i)

    assert job.broker.supports_priority
    rs = [job.publish({"i": i}, task_options=TaskOptions(priority=0)) for i in range(3)]
    rs += [job.publish({"i": i}, task_options=TaskOptions(priority=9)) for i in range(3, 6)]
    wait_until(lambda: job.get_message_count() == 6, 10, message="6 waiting")
    consumers(job.consume())
    for r in rs:
        r.wait(30)
    assert order == [3, 4, 5, 0, 1, 2]


def check_priority_is_dropped(params: ParamsFactory, queue_name: str, consumers: Callable[[Any], None],
                              **kw: Any) -> None:
    """A broker without priorities: TaskOptions(priority=...) is dropped and the task still runs."""
    @boost(params(queue_name, is_using_rpc_mode=True, **kw))
    def job(i):
        return i

    assert not job.broker.supports_priority
    r = job.publish({"i": 1}, task_options=TaskOptions(priority=9))
    consumers(job.consume())
    assert r.get(timeout=30) == 1


def check_pulled_message_stays_with_its_holder(holder: Any, poller: Any, *, watch: float, poll: float,
                                               before_poll: Optional[Callable[[], Any]] = None) -> list:
    """The pull path holds a lease: a message ``holder`` fetched is never received by ``poller`` (another
    broker on the queue, reclaiming expired messages as it polls; ``before_poll()`` before each fetch of
    ``poll`` s) for ``watch`` s, several lease timeouts. The holder then acks it; returns its deliveries."""
    holder.publish([OutgoingMessage(body='{"x": 1, "extra": {"task_id": "held"}}', task_id="held")])
    got = holder.fetch(1, 10)
    assert len(got) == 1
    deadline = time.monotonic() + watch
    stolen: list = []
    while time.monotonic() < deadline and not stolen:
        if before_poll is not None:
            before_poll()
        stolen = poller.fetch(1, poll)
    assert stolen == []
    holder.ack(got)
    return got


# ---------------------------------------------------------------------------------------- crash scenarios
def check_killed_workers_task_runs_again(work: Booster, start_worker: Callable[[float], subprocess.Popen],
                                         marker_dir: Path, *, hold: float, rerun_timeout: float,
                                         while_running: Optional[Callable[[], None]] = None) -> float:
    """Task 7 starts in a worker (holding it ``hold`` s), which is SIGKILLed (``while_running()`` checked
    before); a fresh worker runs it again within ``rerun_timeout`` s: started twice, done once. Returns the
    time (monotonic) of the kill."""
    work.push(7)
    slow = start_worker(hold)
    try:
        wait_until(lambda: markers(marker_dir, "started.7."), 30, message="the task started in the first worker")
        if while_running is not None:
            while_running()
        os.kill(slow.pid, signal.SIGKILL)
    finally:
        stop_processes(slow)
    killed_at = time.monotonic()
    assert not (marker_dir / "done.7").exists()
    fresh = start_worker(0)
    try:
        wait_until(lambda: (marker_dir / "done.7").exists(), rerun_timeout, interval=0.1,
                   message="the killed worker's task ran again in another worker")
    finally:
        stop_processes(fresh)
    assert len(markers(marker_dir, "started.7.")) == 2
    return killed_at


def check_long_task_never_handed_out_twice(work: Booster, start_worker: Callable[[float], subprocess.Popen],
                                           marker_dir: Path, hold: float) -> None:
    """Task 7 runs ``hold`` s (several lease / heartbeat timeouts) in a worker of concurrency 1 while a
    second worker consumes (task 8: the first is busy, only the second can run it) and reclaims on the
    same queue: the living worker keeps task 7, which starts once."""
    work.push(7)
    first = start_worker(hold)
    second = None
    try:
        wait_until(lambda: markers(marker_dir, "started.7."), 30, message="the long task started")
        second = start_worker(0)
        work.push(8)
        wait_until(lambda: (marker_dir / "done.8").exists(), 30, message="the second worker consumes")
        wait_until(lambda: (marker_dir / "done.7").exists(), 60, message="the long task ended")
    finally:
        # the second worker goes first: done.7 is written before the first worker acks 7, and a SIGKILL of
        # the first worker in between leaves 7 unacked by a dead holder, which a second worker still alive
        # would rightly run again (at-least-once); that is not the double hand-out this test is about
        stop_processes(*(p for p in (second, first) if p is not None))
    assert len(markers(marker_dir, "started.7.")) == 1, markers(marker_dir, "started.")


def check_sigkill_mid_run_loses_none(work: Booster, start_worker: Callable[[float], subprocess.Popen],
                                     marker_dir: Path, *, n: int = 1000, hold: float, kill_after: int,
                                     first_timeout: float, settled: Optional[Callable[[], Any]] = None,
                                     settled_timeout: float = 10) -> None:
    """Issue 15: ``n`` tasks, the worker (holding each ``hold`` s) SIGKILLed once ``kill_after`` ran, a new
    worker started: every task id runs. ``settled()``, waited for while the new worker lives: the
    framework finished the last tasks (their markers are written before the ack)."""
    work.push_many([(i,) for i in range(n)])
    first = start_worker(hold)
    try:
        wait_until(lambda: len(markers(marker_dir, "done.")) >= kill_after, first_timeout, interval=0.05,
                   message=f"{kill_after} tasks done")
        os.kill(first.pid, signal.SIGKILL)
    finally:
        stop_processes(first)
    assert len(markers(marker_dir, "done.")) < n
    second = start_worker(0)
    try:
        wait_until(lambda: len(markers(marker_dir, "done.")) == n, 180, interval=0.2,
                   message=f"all {n} task ids ran")
        if settled is not None:
            wait_until(settled, settled_timeout, interval=0.1, message="the framework settled every task")
    finally:
        stop_processes(second)
    assert {f"done.{i}" for i in range(n)} == set(markers(marker_dir, "done."))
