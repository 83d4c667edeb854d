"""A consumer process for the chaos tests, shaped like the engine: one thread fetches (bounded by free
capacity), a small pool runs the "work", another thread acks in batches.

usage: python _consumer_proc.py URL QUEUE OUTFILE WORK_MS
Each processed message's x is appended to OUTFILE (flushed) *before* it is acked.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions


def main() -> None:
    url, queue_name, outfile, work_ms = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    broker = RabbitmqBroker(queue_name, RabbitmqOptions(url=url, heartbeat=5, reconnect_max_delay=1.0))
    workers = 4
    free = threading.Semaphore(workers)
    acks: "queue.Queue" = queue.Queue()
    out = open(outfile, "a", buffering=1)
    lock = threading.Lock()

    def work(d) -> None:
        try:
            time.sleep(work_ms / 1000.0)
            with lock:
                out.write(f"{json.loads(d.body)['x']}\n")
            acks.put(d)
        finally:
            free.release()

    def acker() -> None:
        while True:
            batch = [acks.get()]
            while not acks.empty() and len(batch) < 50:
                batch.append(acks.get_nowait())
            broker.ack(batch)

    threading.Thread(target=acker, daemon=True).start()
    pool = ThreadPoolExecutor(workers)
    print("ready", flush=True)
    while True:
        free.acquire()
        n = 1
        while n < workers and free.acquire(blocking=False):
            n += 1
        got = broker.fetch(n, 1.0)
        for _ in range(n - len(got)):
            free.release()
        for d in got:
            pool.submit(work, d)


if __name__ == "__main__":
    main()
