"""RabbitMQ benchmark, side by side in one run: raw pika, funboost-rabbitmq, the original funboost 55.0.

    python bench/rabbitmq_bench.py [--n 20000] [--n-confirmed 2000] [--orig-python PATH] [--publish-only]

Publish rates: messages per second until the last one is stored (confirmed where said).
Consume rates: messages per second from the start of consuming until the last function ran (and, for
manual-ack modes, was acked), queue pre-filled with N messages, function does nothing.
The original funboost runs in its own venv (default bench/.venvs/orig, made by run_all.py --setup-only)
in a subprocess, with a funboost_config.py in a temporary folder so that nothing is written into this
repository.
The batch-publish target (ours, confirmed, vs the original's unconfirmed one-by-one push) is measured in
alternating rounds in the same run (``publish_target``): the original runs as a long-lived subprocess that
pushes one round when told to, and each round waits until the server has stored everything before the next
one starts, so no side pays for the other's backlog. Medians of rounds and of per-round ratios.
Figures on a noisy 2-core machine: read them as +-30 %.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ORIG_RABBITMQ_SETTINGS, named_processes_cpu, original_config  # noqa: E402

URL = os.environ.get("FUNBOOST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BODY = b'{"x": 1, "extra": {"task_id": "t", "publish_time": 1.0}}'


def qname(tag: str) -> str:
    return f"bench_{tag}_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ raw pika
def confirmed_one_by_one(n_confirmed: int, rounds: int = 10) -> dict[str, float]:
    """Raw pika and our push, alternated in rounds (medians): the confirm round trip (an fsync on the
    server) varies several-fold with the machine's load, so one pass of each is not comparable.

    Two raw sides: the same work as our push (the same message: an envelope-sized body and a message id,
    to a queue declared with the kind's default arguments, priorities 0..10), which isolates the client's
    cost, and pika's plainest publish (a small body to a queue without priorities), for context: the
    priority queue alone costs RabbitMQ about a tenth more per message."""
    import pika
    from funboost import BoosterParams, boost
    from funboost_rabbitmq import RabbitmqOptions

    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    q_plain = qname("rawc")
    ch.queue_declare(q_plain, durable=True)
    q_same = qname("rawcp")
    ch.queue_declare(q_same, durable=True,
                     arguments={"x-max-priority": RabbitmqOptions().effective_max_priority()})
    qo = qname("oursc")

    @boost(BoosterParams(queue_name=qo, broker_kind="RABBITMQ", state_backend="memory", log_to_console=False))
    def task(x: int) -> None:
        pass

    task.push(0)
    from funboost.message import build_envelope, dumps
    same_body = dumps(build_envelope({"x": 1}, task_id=str(uuid.uuid4()))).encode()  # what task.push(1) sends
    plain, same, ours_ = [], [], []
    per_round = max(1, n_confirmed // rounds)
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            ch.basic_publish("", q_plain, BODY, props)
        plain.append(per_round / (time.perf_counter() - t))
        ids = [str(uuid.uuid4()) for _ in range(per_round)]  # made before the clock starts
        t = time.perf_counter()
        for mid in ids:
            ch.basic_publish("", q_same, same_body, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", message_id=mid))
        same.append(per_round / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(per_round):
            task.push(i)
        ours_.append(per_round / (time.perf_counter() - t))
    ch.queue_delete(q_plain)
    ch.queue_delete(q_same)
    conn.close()
    task.broker.delete_queues()
    return {"raw pika publish 1-by-1, confirmed, same message and queue arguments (median of rounds)":
            statistics.median(same),
            "raw pika publish 1-by-1, confirmed (median of rounds)": statistics.median(plain),
            "ours push 1-by-1, confirmed (median of rounds)": statistics.median(ours_),
            "  ratio ours/raw (same message and queue), median of per-round ratios": statistics.median(
                o / r for o, r in zip(ours_, same)),
            "  ratio ours/raw (plain queue, small body), median of per-round ratios": statistics.median(
                o / r for o, r in zip(ours_, plain))}


def raw_pika(n: int) -> dict[str, float]:
    import pika

    out: dict[str, float] = {}
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    q = qname("raw")
    ch.queue_declare(q, durable=True)
    t = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", q, BODY, props)
    ch.queue_declare(q, passive=True)  # a round trip: the server has processed every publish
    out["raw pika publish 1-by-1, no confirms"] = n / (time.perf_counter() - t)
    while ch.queue_declare(q, passive=True).method.message_count < n:
        time.sleep(0.01)

    count = [0]

    def on_msg(c, method, _p, _b):
        c.basic_ack(method.delivery_tag)
        count[0] += 1
        if count[0] >= n:
            c.stop_consuming()

    ch.basic_qos(prefetch_count=100)
    ch.basic_consume(q, on_msg)
    t = time.perf_counter()
    ch.start_consuming()
    out["raw pika consume, prefetch 100, ack each"] = n / (time.perf_counter() - t)
    ch.queue_delete(q)
    conn.close()
    return out


# ------------------------------------------------------------------ ours
def ours(n: int) -> dict[str, float]:
    from funboost import BoosterParams, boost
    from funboost.plugins.broker import OutgoingMessage

    out: dict[str, float] = {}
    q = qname("ours")
    done = [0]
    finished = threading.Event()
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=q, broker_kind="RABBITMQ", state_backend="memory", log_to_console=False))
    def task(x: int) -> None:
        with lock:
            done[0] += 1
            if done[0] >= n:
                finished.set()

    task.push(0)  # connect and declare outside the timing
    task.clear()

    broker = task.broker
    t = time.perf_counter()
    for start in range(0, n, 1000):
        broker.publish([OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": f"t{i}"}}))
                        for i in range(start, min(n, start + 1000))])
    out["ours broker.publish batches of 1000, confirmed"] = n / (time.perf_counter() - t)
    task.clear()

    t = time.perf_counter()
    task.push_many(list(range(n)), batch_size=1000)
    out["ours push_many (batches of 1000), confirmed"] = n / (time.perf_counter() - t)

    t = time.perf_counter()
    task.consume()
    finished.wait(600)
    out["ours consume, manual ack (threads 50)"] = done[0] / (time.perf_counter() - t)
    task.stop_consume(10)
    try:
        broker.delete_queues()
    except Exception:
        pass
    return out


# ------------------------------------------------------------------ original funboost 55.0
ORIG_CONFIG = original_config(ORIG_RABBITMQ_SETTINGS)

ORIG_SCRIPT = """
import json, logging, os, sys, threading, time, uuid
from funboost import boost, BoosterParams, BrokerEnum
n, threads = int(sys.argv[1]), int(sys.argv[2])
q = "bench_orig_" + uuid.uuid4().hex[:8]
done = [0]; lock = threading.Lock(); finished = threading.Event()
@boost(BoosterParams(queue_name=q, broker_kind=BrokerEnum.RABBITMQ_AMQPSTORM, concurrent_num=threads,
                     log_level=logging.WARNING, is_show_message_get_from_broker=False,
                     create_logger_file=False))
def task(x):
    with lock:
        done[0] += 1
        if done[0] >= n:
            finished.set()
task.push(0); task.clear()
t = time.perf_counter()
for i in range(n):
    task.push(i)
# unconfirmed: push returned once the frame was written; timed like every other publish here, until the
# server holds all n (as ours is timed until its confirms, or its flush, came back)
deadline = time.time() + 300
while task.publisher.get_message_count() < n and time.time() < deadline:
    time.sleep(0.005)
pub = n / (time.perf_counter() - t)
t = time.perf_counter()
task.consume()
finished.wait(600)
con = done[0] / (time.perf_counter() - t)
sys.__stdout__.write("RESULT " + json.dumps({"pub": pub, "con": con}) + chr(10))  # funboost patches print
sys.__stdout__.flush()
try:
    task.publisher.queue.delete(q)  # leave no bench queue behind
except Exception:
    pass
os._exit(0)
"""


def original(n: int, python: str) -> dict[str, float]:
    if not os.path.exists(python):
        return {}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "funboost_config.py"), "w") as f:
            f.write(textwrap.dedent(ORIG_CONFIG))
        with open(os.path.join(tmp, "orig_bench.py"), "w") as f:
            f.write(textwrap.dedent(ORIG_SCRIPT))
        for threads in (50, 1):
            env = {**os.environ, "PYTHONPATH": tmp}
            r = subprocess.run([python, "orig_bench.py", str(n), str(threads)], cwd=tmp, env=env,
                               capture_output=True, text=True, timeout=1200)
            line = [x[x.index("RESULT ") + 7:] for x in r.stdout.splitlines() if "RESULT {" in x]
            if not line:
                print("original funboost failed:", r.stderr[-2000:], file=sys.stderr)
                continue
            res = json.loads(line[0])
            if threads == 50:
                out["original 55.0 RABBITMQ_AMQPSTORM push 1-by-1 (no confirms)"] = res["pub"]
            out[f"original 55.0 RABBITMQ_AMQPSTORM consume (threads {threads})"] = res["con"]
    return out


# ------------------------------------------------------------------ batch publish target, alternating
ORIG_PUSH_SCRIPT = """
import json, logging, os, sys, time, uuid
from funboost import boost, BoosterParams, BrokerEnum
n = int(sys.argv[1])
q = "bench_origpush_" + uuid.uuid4().hex[:8]
@boost(BoosterParams(queue_name=q, broker_kind=BrokerEnum.RABBITMQ_AMQPSTORM, log_level=logging.WARNING,
                     is_show_message_get_from_broker=False, create_logger_file=False))
def task(x):
    pass
task.push(0); task.clear()
out = sys.__stdout__  # funboost patches print
out.write("READY" + chr(10)); out.flush()
for line in sys.stdin:
    if line.strip() == "clear":
        task.clear()
        out.write("CLEARED" + chr(10)); out.flush()
        continue
    if line.strip() != "go":
        break
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        task.push(i)
    cpu = time.process_time() - cpu
    deadline = time.time() + 120
    while task.publisher.get_message_count() < n and time.time() < deadline:  # stored: no backlog left
        time.sleep(0.005)
    rate = n / (time.perf_counter() - t)  # until stored, as every publish rate here
    out.write("RESULT " + json.dumps({"pub": rate, "cpu": cpu}) + chr(10)); out.flush()
task.publisher.queue.delete(q)
os._exit(0)
"""


def _server_cpu() -> float:
    """CPU seconds used so far by the local RabbitMQ node (beam.smp), or nan if it cannot be read."""
    return named_processes_cpu("beam.smp")


def publish_target(n: int, rounds: int, python: str) -> dict[str, float]:
    """Ours, batches confirmed, against the original's unconfirmed one-by-one push, alternating.
    Also CPU microseconds per message: of the publishing process and of the RabbitMQ node."""
    from funboost import BoosterParams, boost
    from funboost.plugins.broker import OutgoingMessage

    q = qname("target")

    @boost(BoosterParams(queue_name=q, broker_kind="RABBITMQ", state_backend="memory", log_to_console=False))
    def task(x: int) -> None:
        pass

    task.push(0)
    task.clear()
    broker = task.broker

    cpu: dict[str, list[float]] = {"orig": [], "push_many": [], "batches": []}
    server_cpu: dict[str, list[float]] = {"orig": [], "push_many": [], "batches": []}

    def measured(name: str, fn: Callable[[], None]) -> float:
        t, c, sc = time.perf_counter(), time.process_time(), _server_cpu()
        fn()
        rate = n / (time.perf_counter() - t)
        cpu[name].append((time.process_time() - c) / n * 1e6)
        server_cpu[name].append((_server_cpu() - sc) / n * 1e6)
        return rate

    def push_many() -> None:
        task.push_many(list(range(n)), batch_size=1000)

    def broker_batches() -> None:
        for start in range(0, n, 1000):
            broker.publish([OutgoingMessage(body=json.dumps({"x": i, "extra": {"task_id": f"t{i}"}}),
                                            task_id=f"t{i}") for i in range(start, min(n, start + 1000))])

    def original_round() -> float:
        sc = _server_cpu()
        orig.stdin.write("go\n")  # type: ignore[union-attr]
        orig.stdin.flush()  # type: ignore[union-attr]
        res = json.loads(read_line("RESULT "))  # returns once the server stored all of them
        server_cpu["orig"].append((_server_cpu() - sc) / n * 1e6)
        cpu["orig"].append(res["cpu"] / n * 1e6)
        orig.stdin.write("clear\n")  # type: ignore[union-attr]
        orig.stdin.flush()  # type: ignore[union-attr]
        read_line("CLEARED")
        return res["pub"]

    orig = None
    tmp = tempfile.mkdtemp()
    if python and os.path.exists(python):
        with open(os.path.join(tmp, "funboost_config.py"), "w") as f:
            f.write(textwrap.dedent(ORIG_CONFIG))
        with open(os.path.join(tmp, "orig_push.py"), "w") as f:
            f.write(textwrap.dedent(ORIG_PUSH_SCRIPT))
        orig = subprocess.Popen([python, "orig_push.py", str(n)], cwd=tmp, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONPATH": tmp})

    def read_line(prefix: str) -> str:
        for line in orig.stdout:  # type: ignore[union-attr]
            if line.startswith(prefix):
                return line[len(prefix):]
        raise RuntimeError("the original funboost's push process ended")

    rates: dict[str, list[float]] = {"orig": [], "push_many": [], "batches": []}
    try:
        if orig is not None:
            read_line("READY")
        for _ in range(rounds):
            if orig is not None:
                rates["orig"].append(original_round())
            rates["push_many"].append(measured("push_many", push_many))
            task.clear()
            rates["batches"].append(measured("batches", broker_batches))
            task.clear()
    finally:
        if orig is not None:
            orig.stdin.close()  # type: ignore[union-attr]
            orig.wait(60)
        broker.delete_queues()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    out = {f"[target, {rounds} alternating rounds] ours push_many (batches of 1000), confirmed":
           med(rates["push_many"]),
           "[target] ours broker.publish batches of 1000, confirmed": med(rates["batches"])}
    if rates["orig"]:
        out["[target] original 55.0 push 1-by-1, NO confirms"] = med(rates["orig"])
        out["  ratio push_many/original, median of per-round ratios"] = med(
            a / b for a, b in zip(rates["push_many"], rates["orig"]))
        out["  ratio broker.publish batches/original, median of per-round ratios"] = med(
            a / b for a, b in zip(rates["batches"], rates["orig"]))
    for name, label in (("push_many", "ours push_many"), ("batches", "ours broker.publish batches"),
                        ("orig", "original push 1-by-1")):
        if cpu[name]:
            out[f"  CPU us/msg {label}: publishing process"] = med(cpu[name])
            out[f"  CPU us/msg {label}: RabbitMQ node"] = med(server_cpu[name])
    print("per round:", {k: [round(x) for x in v] for k, v in rates.items()}, file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-confirmed", type=int, default=2000, help="N for one-by-one confirmed publishing")
    ap.add_argument("--orig-python", default=os.environ.get("FUNBOOST_ORIG_PYTHON", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venvs", "orig", "bin", "python")))
    ap.add_argument("--skip-orig", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of the batch publish target")
    ap.add_argument("--n-target", type=int, default=10000, help="messages per round of the target")
    ap.add_argument("--publish-only", action="store_true", help="only the batch publish target")
    args = ap.parse_args()
    results: dict[str, float] = {}
    results.update(publish_target(args.n_target, args.rounds, "" if args.skip_orig else args.orig_python))
    if args.publish_only:
        _print(results, args)
        return
    results.update(confirmed_one_by_one(args.n_confirmed))
    results.update(raw_pika(args.n))
    results.update(ours(args.n))
    if not args.skip_orig:
        results.update(original(args.n, args.orig_python))
    _print(results, args)


def _print(results: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\nRabbitMQ on {URL.split('@')[-1]}, N={args.n} (confirmed 1-by-1: N={args.n_confirmed}; "
          f"target: {args.rounds} rounds of {args.n_target})")
    for k, v in results.items():
        if "ratio" in k:
            print(f"  {k:<80} {v:>10.2f}")
        elif "CPU" in k:
            print(f"  {k:<80} {v:>10.1f} us")
        else:
            print(f"  {k:<80} {v:>10,.0f} msg/s")


if __name__ == "__main__":
    main()
