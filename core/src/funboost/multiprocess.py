"""``multi_process_consume``: n processes, each consuming with its own concurrency mode.

Signals: each child runs in a process group of its own, so a Ctrl-C in a terminal reaches only the
parent, which forwards SIGINT / SIGTERM to its children exactly once (see
:func:`funboost.keepalive.graceful_stop`); each child drains like a single-process consumer and exits 0,
and the parent exits 0 once they have. A second signal to the parent is forwarded too (children exit at
once). A child whose parent disappears (kill -9) stops by itself.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Optional

_children: list = []  # processes started by this process (never inherited: reset in each child)
if hasattr(os, "register_at_fork"):
    # any forked process (ours, or the user's own multiprocessing) starts with no children: the parent's
    # would keep its at-exit wait asking is_alive() of processes it did not start, which raises there
    # ("can only test a child process") and made such a child exit with status 1
    os.register_at_fork(after_in_child=_children.clear)


# pid of a child -> its shared (tasks done, tasks failed), written by the child: the parent's status line
# (`funboost consume --processes N`) reads them, also after the child ended
_child_totals: dict[int, Any] = {}
TOTALS_INTERVAL = 0.5


def children_totals(pids: Optional[set] = None) -> tuple[int, int]:
    """Tasks done and failed by this process's consumer children (all, or those of ``pids``) so far,
    including children that have ended (their last totals, written at the end of their drain)."""
    done = failed = 0
    for pid, totals in list(_child_totals.items()):
        if pids is None or pid in pids:
            done += totals[0]
            failed += totals[1]
    return done, failed


def _report_totals(consumers: list, totals: Any) -> None:
    totals[0] = sum(c.stats.total_runs for c in consumers)
    totals[1] = sum(c.stats.total_fail for c in consumers)


def _child_main(queue_names: list[str], modules: dict[str, str], parent_pid: int, totals: Any = None) -> None:
    from funboost import keepalive
    os.setpgrp()  # a terminal's Ctrl-C goes to the parent only; it forwards one signal to us
    _children.clear()
    _child_totals.clear()
    keepalive.reset_after_fork()
    keepalive.install_signal_handlers()
    from funboost.booster import BoostersManager
    boosters = []
    for q in queue_names:
        b = BoostersManager.get_booster(q, import_module=modules.get(q))
        b._consumer = None  # a forked copy of the parent's consumer is not ours
        b._brokers = {}
        b.consume()
        boosters.append(b)
    if totals is not None:
        import threading
        # kept here: a stopped booster forgets its consumer, and the last report comes after the stop
        consumers = [b.consumer for b in boosters if b.consumer is not None]

        def report() -> None:
            while True:
                _report_totals(consumers, totals)
                time.sleep(TOTALS_INTERVAL)
        threading.Thread(target=report, name="funboost-child-totals", daemon=True).start()
        # the last totals, once the drain has finished the running tasks (also when it ends with os._exit)
        keepalive.on_graceful_exit(lambda: _report_totals(consumers, totals))
    # wait in the main thread (signal handlers run here); exit when the parent is gone, so children
    # never outlive their supervisor
    keepalive.mark_main_waiting(True)
    while not keepalive.shutdown_requested():
        time.sleep(0.2)
        if os.getppid() != parent_pid:
            keepalive.graceful_stop(timeout=5)
            os._exit(0)
    keepalive.graceful_stop()


def start_consumer_processes(queue_process_num: dict[str, int], boosters: dict[str, Any]) -> list:
    method = os.environ.get("FUNBOOST_MP_START_METHOD")
    ctx = multiprocessing.get_context(method) if method else multiprocessing.get_context()
    for q in queue_process_num:
        caps = getattr(getattr(boosters[q], "broker_cls", None), "capabilities", None)
        if caps is not None and not caps.cross_process:
            # each child would run its own copy of what was pushed before the fork, and nothing pushed after
            raise ValueError(f"queue {q!r}: broker kind {boosters[q].broker_cls.kind!r} is in-process only; it "
                             f"cannot be consumed by other processes (use consume(), or a kind shared between "
                             f"processes such as sqlite or redis_ack_able)")
    procs = []
    for q, n in queue_process_num.items():
        b = boosters[q]
        module = b.__module__
        if module == "__main__":
            module = getattr(sys.modules.get("__main__"), "__spec__", None)
            module = module.name if module is not None else None
        for i in range(int(n)):
            totals = ctx.Array("q", 2, lock=False)  # (done, failed), written by the child only
            p = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has it
                target=_child_main, args=([q], {q: module} if module else {}, os.getpid(), totals),
                name=f"funboost-{q}-{i}", daemon=False)
            p.start()
            procs.append(p)
            _child_totals[p.pid] = totals
    _children.extend(procs)
    from funboost import keepalive
    keepalive.install_signal_handlers()
    _children_keepalive.start()
    return procs


def live_children() -> list:
    return [p for p in _children if p.is_alive()]


def forward_signal(signum: int) -> None:
    for p in live_children():
        try:
            os.kill(p.pid, signum)
        except ProcessLookupError:
            pass


def stop_children(signum: Optional[int], timeout: float) -> tuple[int, int]:
    """Forward ``signum`` (SIGTERM when None) to the live children and wait up to ``timeout`` for them to
    drain and exit; kill what is left. Returns (children that exited cleanly, children killed)."""
    procs = live_children()
    if not procs:
        return 0, 0
    forward_signal(signum or signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        while p.is_alive() and time.monotonic() < deadline:
            p.join(0.2)  # short joins: the main thread stays responsive to a second signal
    killed = 0
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
            killed += 1
    _children[:] = [p for p in _children if p.is_alive()]
    return len(procs) - killed, killed


def _children_running() -> bool:
    return bool(live_children())


def _make_keepalive():
    from funboost.keepalive import KeepAlive
    return KeepAlive("funboost-children", _children_running)


_children_keepalive = _make_keepalive()
