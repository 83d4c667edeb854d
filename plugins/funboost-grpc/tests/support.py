"""Test helpers: a stand-in for the engine's consume loop (until the engine runs these tests end to end),
free ports. The broker and its gRPC server are always real; consumer subprocesses are core's
(funboost.testing.failover)."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

from funboost.engine.status import FunctionResultStatus
from funboost.testing.servers import free_port  # noqa: F401  (re-exported for the tests)



def task(body: dict) -> Any:
    """The function the stand-in engine runs: {"x": n} -> 2n; {"fail": "msg"} raises; {"sleep": s} waits."""
    if body.get("sleep"):
        time.sleep(body["sleep"])
    if "fail" in body:
        raise ZeroDivisionError(body["fail"])
    return {"doubled": body.get("x", 0) * 2, "pid": os.getpid()}


def run_one(broker: Any, deliveries: list) -> None:
    for d in deliveries:
        status = FunctionResultStatus(queue_name=broker.queue_name, task_id=str((d.body.get("extra") or {}).get("task_id", "")),
                                      params=d.body)
        try:
            status.result = task(d.body)
            status.success = True
        except Exception as exc:  # the engine records any error in the status
            status.set_error(exc)
        status.finish()
        if d.reply is not None:
            d.reply(status)
    broker.ack(deliveries)


def run_task_loop(broker: Any, stop_after: float = 60.0, stop: Optional[threading.Event] = None) -> None:
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        ds = broker.fetch(16, 0.2)
        if ds:
            run_one(broker, ds)


class LoopThread:
    """Runs :func:`run_task_loop` on a broker in a thread of this process."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.stop = threading.Event()
        broker.serve()
        self.thread = threading.Thread(target=run_task_loop, args=(broker, 60.0, self.stop), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
