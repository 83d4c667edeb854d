"""A consumer process for the tests: hosts one queue with GrpcBroker and runs a tiny stand-in for the
engine (fetch -> run -> reply -> ack). Prints "READY <address>" once it listens.

usage: python consumer_proc.py QUEUE PORT [broker_exclusive_config as JSON]
"""
import json
import os
import sys

from funboost_grpc import GrpcBroker
from support import run_task_loop  # same folder: python puts the script dir on sys.path

queue, port = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
broker = GrpcBroker(queue, GrpcBroker.parse_options({"port": port, **extra}))
print("READY", broker.serve(), os.getpid(), flush=True)
run_task_loop(broker, stop_after=float(os.environ.get("CONSUMER_LIFETIME", "120")))
