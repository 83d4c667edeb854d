"""``multi_process_consume``: n processes, each consuming with its own concurrency mode."""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from typing import Any


def _child_main(queue_names: list[str], modules: dict[str, str], parent_pid: int) -> None:
    from funboost.booster import BoostersManager
    boosters = []
    for q in queue_names:
        b = BoostersManager.get_booster(q, import_module=modules.get(q))
        b._consumer = None  # a forked copy of the parent's consumer is not ours
        b._brokers = {}
        boosters.append(b.consume())
    # exit when the parent is gone, so children never outlive their supervisor
    while True:
        time.sleep(1)
        if os.getppid() != parent_pid:
            for b in boosters:
                b.stop_consume(5)
            os._exit(0)


def start_consumer_processes(queue_process_num: dict[str, int], boosters: dict[str, Any]) -> list:
    method = os.environ.get("FUNBOOST_MP_START_METHOD")
    ctx = multiprocessing.get_context(method) if method else multiprocessing.get_context()
    procs = []
    for q, n in queue_process_num.items():
        b = boosters[q]
        module = b.__module__
        if module == "__main__":
            module = getattr(sys.modules.get("__main__"), "__spec__", None)
            module = module.name if module is not None else None
        for i in range(int(n)):
            p = ctx.Process(target=_child_main, args=([q], {q: module} if module else {}, os.getpid()),
                            name=f"funboost-{q}-{i}", daemon=False)
            p.start()
            procs.append(p)
    return procs
