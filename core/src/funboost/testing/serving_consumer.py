"""A consumer process for the tests of the server transports (grpc, tcp, http): an ordinary ``@boost``
function on the given kind, consuming. Prints ``READY <address> <pid>`` once it listens, then lives for
``lifetime`` seconds (or until killed: the failover tests SIGKILL it).

The task: ``work(x=0, sleep=0, fail=None, mark=None)`` -> ``{"doubled": 2x, "pid": pid}``; ``fail`` raises
``ZeroDivisionError(fail)``; ``sleep`` waits first; ``mark``, a file path, gets a line ``x`` per run.

usage: python -m funboost.testing.serving_consumer KIND QUEUE PORT [broker_exclusive_config as JSON] [LIFETIME]
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional


def main(argv: list[str]) -> None:
    kind, queue, port = argv[0], argv[1], int(argv[2])
    extra = json.loads(argv[3]) if len(argv) > 3 else {}
    lifetime = float(argv[4]) if len(argv) > 4 else 120.0

    from funboost import BoosterParams, boost

    @boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config={"port": port, **extra},
                         concurrent_num=8, max_retry_times=0, state_backend="memory", log_to_console=False))
    def work(x: int = 0, sleep: float = 0, fail: Optional[str] = None, mark: Optional[str] = None) -> dict:
        if mark:  # a file the test reads: one line per run
            with open(mark, "a") as f:
                f.write(f"{x}\n")
        if sleep:
            time.sleep(sleep)
        if fail:
            raise ZeroDivisionError(fail)
        return {"doubled": x * 2, "pid": os.getpid()}

    work.consume()
    print("READY", work.broker.serve(), os.getpid(), flush=True)
    time.sleep(lifetime)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
