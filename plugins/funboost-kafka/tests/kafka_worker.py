"""A consumer process for the multi-process tests: fetch, run in a thread pool, ack out of order.

Usage: python kafka_worker.py QUEUE OUTFILE [--slow-ms N] [--run-seconds S]
Appends "<task_id> <partition> <offset>\n" to OUTFILE after each task finished (before ack), and
"ASSIGNED <p,p,..>" lines when its assignment changes.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_options  # noqa: E402

from funboost_kafka.broker import KafkaBroker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("queue")
    ap.add_argument("outfile")
    ap.add_argument("--slow-ms", type=int, default=5)
    ap.add_argument("--run-seconds", type=float, default=60)
    args = ap.parse_args()
    broker = KafkaBroker(args.queue, make_options())
    out = open(args.outfile, "a", buffering=1)
    pool = ThreadPoolExecutor(8)

    def run(d):
        time.sleep(random.uniform(0, args.slow_ms) / 1000.0)  # out-of-order completion
        out.write(f"{d.task_id} {d.tag[0].partition} {d.tag[1]}\n")
        broker.ack([d])

    last_assignment = None
    deadline = time.monotonic() + args.run_seconds
    while time.monotonic() < deadline:
        for d in broker.fetch(16, 0.5):
            pool.submit(run, d)
        consumer = broker._consumer
        if consumer is not None:
            assignment = sorted(tp.partition for tp in consumer.assignment())
            if assignment != last_assignment:
                out.write("ASSIGNED " + ",".join(map(str, assignment)) + "\n")
                last_assignment = assignment
        if os.path.exists(args.outfile + ".stop"):
            break
    pool.shutdown(wait=True)
    broker.close()


if __name__ == "__main__":
    main()
