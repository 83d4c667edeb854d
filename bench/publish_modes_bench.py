"""One-by-one push, side by side in alternating rounds: the raw client, funboost's two publish modes, and
the original funboost 55.0, on redis (REDIS_ACK_ABLE), RabbitMQ and Kafka.

    python bench/publish_modes_bench.py [--brokers redis,rabbitmq,kafka] [--rounds 5] [--n-redis 10000]
                                        [--n-rabbitmq 3000] [--n-kafka 3000] [--orig-python PATH]

Every side is a long-lived child process (imports, connections and queue declarations happen once, before
the first round); each round sends ``go`` to every side in turn (the order flipped every other round),
each side pushes N messages one by one and reports its rate and CPU per message. Figures are medians over
the rounds, "±" half the range; ratios are medians of the per-round ratios.

Sides per broker:

* ``raw``: the client library's own confirmed one-by-one publish (redis-py ``LPUSH``, pika
  ``BlockingChannel`` in confirm mode, kafka-python ``send().get()``);
* ``confirmed``: funboost ``push`` in the default ``publish_mode="confirmed"`` (returns once the broker has
  the message); ``confirmed x8``: the same from 8 threads at once (N/8 each: group commit);
* ``pipelined``: ``publish_mode="pipelined"`` (returns at once), then ``flush()``: the time includes the
  broker's confirmation of every message;
* ``original``: funboost 55.0 (``REDIS_ACK_ABLE``, ``RABBITMQ_AMQPSTORM``, ``KAFKA``): its push, timed
  until the broker holds all N (its queue size reaches N; Kafka: ``producer.flush()``).

The original runs in its own virtualenv (``--orig-python``, env ``FUNBOOST_ORIG_PYTHON``, default
``bench/.venvs/orig/bin/python``, made by ``run_all.py --setup-only``), in a scratch directory that holds its
``funboost_config.py``. Kafka: start the test broker with ``bash scripts/kafka_service.sh`` first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import ORIG_RABBITMQ_SETTINGS, original_config  # noqa: E402

ROOT = os.path.dirname(HERE)
REDIS_URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FUNBOOST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
KAFKA = os.environ.get("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
ORIG_KIND = {"redis": "REDIS_ACK_ABLE", "rabbitmq": "RABBITMQ_AMQPSTORM", "kafka": "KAFKA"}
OUR_KIND = {"redis": "redis_ack_able", "rabbitmq": "rabbitmq", "kafka": "kafka"}


# ------------------------------------------------------------------------------- children (our venv)
def _serve(push_n, clear) -> None:
    """The child's loop: READY, then per line ``go N`` run ``push_n(N)`` and report; ``clear``; ``quit``."""
    out = sys.__stdout__
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "clear":
            clear()
            out.write("CLEARED\n")
            out.flush()
            continue
        n = int(cmd[1])
        t, cpu = time.perf_counter(), time.process_time()
        push_n(n)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        out.write("RESULT " + json.dumps({"rate": n / wall, "cpu_us": cpu / n * 1e6}) + "\n")
        out.flush()
    clear()
    os._exit(0)


def child_raw(broker: str) -> None:
    q = f"bench_raw_{uuid.uuid4().hex[:8]}"
    body = json.dumps({"x": 1, "extra": {"task_id": str(uuid.uuid4()), "publish_time": time.time(),
                                         "publish_time_format": "2026-12-04 12:00:00"}})
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(REDIS_URL)

        def push_n(n: int) -> None:
            lpush = r.lpush
            for _ in range(n):
                lpush(q, body)
        _serve(push_n, lambda: r.delete(q))
    elif broker == "rabbitmq":
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        ch = conn.channel()
        ch.queue_declare(q, durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        data = body.encode()

        def push_n(n: int) -> None:
            for _ in range(n):
                ch.basic_publish("", q, data, props)

        def clear() -> None:
            ch.queue_purge(q)
        _serve(push_n, clear)
    else:
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=KAFKA)
        admin.create_topics([NewTopic(q, 3, 1)])
        p = KafkaProducer(bootstrap_servers=KAFKA, acks="all", linger_ms=0)
        data = body.encode()
        p.send(q, data).get(30)

        def push_n(n: int) -> None:
            for _ in range(n):
                p.send(q, data).get(60)

        def clear() -> None:
            try:
                admin.delete_topics([q])
            except Exception:
                pass
        _serve(push_n, clear)


def child_ours(broker: str, mode: str, threads: int) -> None:
    from funboost import BoosterParams, boost
    q = f"bench_{mode}_{uuid.uuid4().hex[:8]}"
    cfg = {"redis": {"url": REDIS_URL}, "rabbitmq": {"url": AMQP_URL},
           "kafka": {"bootstrap_servers": KAFKA}}[broker]

    @boost(BoosterParams(queue_name=q, broker_kind=OUR_KIND[broker], broker_exclusive_config=cfg,
                         publish_mode=mode, state_backend="memory", log_to_console=False, log_level=30))
    def add(x: int, y: int = 1) -> int:
        return x + y

    add.push(0)  # connection, topology / topic
    add.flush()
    add.clear()

    def one_thread(n: int) -> None:
        push = add.push
        for i in range(n):
            push(i)

    def push_n(n: int) -> None:
        if threads == 1:
            one_thread(n)
        else:
            ts = [threading.Thread(target=one_thread, args=(n // threads,)) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        add.flush()

    def clear() -> None:
        try:
            add.clear()
        except Exception:
            pass
    _serve(push_n, clear)


# ------------------------------------------------------------------------------- the original
ORIG_CONFIG = original_config({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": 6379, "REDIS_DB": 0, **ORIG_RABBITMQ_SETTINGS,
                               "KAFKA_BOOTSTRAP_SERVERS": KAFKA})

ORIG_SCRIPT = """
import json, logging, os, sys, time, uuid
from funboost import boost, BoosterParams, BrokerEnum
kind = sys.argv[1]
q = "bench_orig_" + uuid.uuid4().hex[:8]
extra = {"group_id": q, "num_partitions": 3} if kind == "KAFKA" else {}
@boost(BoosterParams(queue_name=q, broker_kind=getattr(BrokerEnum, kind), log_level=logging.WARNING,
                     is_show_message_get_from_broker=False, create_logger_file=False,
                     broker_exclusive_config=extra))
def add(x, y=1):
    return x + y
add.push(0)
if kind == "KAFKA":
    add.publisher._producer.flush()
else:
    add.clear()
out = sys.__stdout__  # the original patches print
out.write("READY" + chr(10)); out.flush()
base = 1
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    if cmd[0] == "clear":
        if kind != "KAFKA":
            add.clear()
        out.write("CLEARED" + chr(10)); out.flush()
        continue
    n = int(cmd[1])
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        add.push(i)
    if kind == "KAFKA":
        add.publisher._producer.flush()
    else:
        deadline = time.time() + 120  # buffered publishers: until the broker holds all of them
        while add.publisher.get_message_count() < n and time.time() < deadline:
            time.sleep(0.001)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out.write("RESULT " + json.dumps({"rate": n / wall, "cpu_us": cpu / n * 1e6}) + chr(10)); out.flush()
if kind != "KAFKA":
    add.clear()
os._exit(0)
"""


class Side:
    """A long-lived child process that pushes N messages per ``go``."""

    def __init__(self, label: str, argv: list[str], cwd: str | None = None, env: dict | None = None) -> None:
        self.label = label
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self._expect("READY")
        self.rates: list[float] = []
        self.cpu: list[float] = []

    def _expect(self, word: str) -> str:
        for line in self.p.stdout:  # type: ignore[union-attr]
            if word in line:
                return line
        err = self.p.stderr.read()[-3000:]  # type: ignore[union-attr]
        raise RuntimeError(f"{self.label}: child ended before {word}: {err}")

    def round(self, n: int) -> float:
        self.p.stdin.write(f"go {n}\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        line = self._expect("RESULT ")
        res = json.loads(line.split("RESULT ", 1)[1].split("\x1b")[0])
        self.p.stdin.write("clear\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        self._expect("CLEARED")
        self.rates.append(res["rate"])
        self.cpu.append(res["cpu_us"])
        return res["rate"]

    def stop(self) -> None:
        try:
            self.p.stdin.write("quit\n")  # type: ignore[union-attr]
            self.p.stdin.flush()  # type: ignore[union-attr]
            self.p.wait(30)
        except Exception:
            self.p.kill()


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> float:
    m = med(xs)
    return (max(xs) - min(xs)) / 2 / m * 100 if xs and m else float("nan")


def run_broker(broker: str, n: int, rounds: int, orig_py: str | None) -> list[tuple[str, str]]:
    me = [sys.executable, os.path.abspath(__file__)]
    sides = [Side("raw", me + ["--child", "raw", broker]),
             Side("confirmed", me + ["--child", "ours", broker, "confirmed", "1"]),
             Side("confirmed x8", me + ["--child", "ours", broker, "confirmed", "8"]),
             Side("pipelined", me + ["--child", "ours", broker, "pipelined", "1"])]
    tmp = None
    if orig_py and os.path.exists(orig_py):
        tmp = tempfile.mkdtemp(prefix="funboost-orig-push-")
        with open(os.path.join(tmp, "funboost_config.py"), "w") as f:
            f.write(ORIG_CONFIG)
        with open(os.path.join(tmp, "orig_push.py"), "w") as f:
            f.write(textwrap.dedent(ORIG_SCRIPT))
        env = {**os.environ, "PYTHONPATH": tmp}
        try:
            sides.append(Side("original", [orig_py, "orig_push.py", ORIG_KIND[broker]], cwd=tmp, env=env))
        except RuntimeError as exc:
            print(f"original funboost failed to start: {exc}", file=sys.stderr)
    try:
        for r in range(rounds):
            order = sides if r % 2 == 0 else list(reversed(sides))
            for s in order:
                s.round(n)
            print(f"  {broker} round {r + 1}: " + ", ".join(f"{s.label} {s.rates[-1]:,.0f}" for s in sides),
                  flush=True)
    finally:
        for s in sides:
            s.stop()
    by = {s.label: s for s in sides}
    out = []
    for s in sides:
        out.append((f"{broker} {s.label}", f"{med(s.rates):>9,.0f} ±{spread(s.rates):.0f}%  "
                                           f"cpu {med(s.cpu):6.1f} µs/msg"))

    def ratio(a: str, b: str) -> str:
        if a not in by or b not in by:
            return "n/a"
        return f"{med([x / y for x, y in zip(by[a].rates, by[b].rates)]):.2f}x"
    out.append((f"{broker} confirmed / raw", ratio("confirmed", "raw")))
    out.append((f"{broker} confirmed x8 / confirmed", ratio("confirmed x8", "confirmed")))
    out.append((f"{broker} pipelined / original", ratio("pipelined", "original")))
    out.append((f"{broker} confirmed / original", ratio("confirmed", "original")))
    return out


# ------------------------------------------------------------------------------- instructions (callgrind)
INSTR_OURS = """
import sys, uuid
from funboost import BoosterParams, boost
mode, n, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = {"publish_mode": mode} if "publish_mode" in BoosterParams.model_fields else {}  # older commits: none
@boost(BoosterParams(queue_name="instr_" + uuid.uuid4().hex[:8], broker_kind="redis_ack_able",
                     broker_exclusive_config={"url": url}, state_backend="memory",
                     log_to_console=False, log_level=30, **kw))
def add(x, y=1):
    return x + y
flush = getattr(add, "flush", lambda: None)
add.push(0)
flush()
for i in range(n):
    add.push(i)
flush()
add.clear()
"""

INSTR_ORIG = """
import os, sys, uuid, logging
from funboost import boost, BoosterParams, BrokerEnum
n = int(sys.argv[2])
@boost(BoosterParams(queue_name="instr_orig_" + uuid.uuid4().hex[:8], broker_kind=BrokerEnum.REDIS_ACK_ABLE,
                     log_level=logging.WARNING, create_logger_file=False))
def add(x, y=1):
    return x + y
add.push(0)
for i in range(n):
    add.push(i)
add.clear()
os._exit(0)
"""


def callgrind(python: str, script: str, args: list[str], cwd: str, env: dict) -> int:
    import re
    out = os.path.join(cwd, "cg.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--cache-sim=no",
                        python, script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if not m:
        raise RuntimeError(f"callgrind {python} {script}: rc={r.returncode}\n{r.stderr[-2000:]}")
    return int(m.group(1))


def instructions(n: int, pythons: list[str], orig_py: str | None) -> None:
    """Instructions per redis push of the publishing process: (count at 2N - count at N) / N."""
    tmp = tempfile.mkdtemp(prefix="funboost-instr-")
    env = {**os.environ, "FUNBOOST_NO_KEEPALIVE": "1", "FUNBOOST_NO_SIGNAL_HANDLERS": "1",
           "FUNBOOST_DATA_DIR": tmp}
    with open(os.path.join(tmp, "ours.py"), "w") as f:
        f.write(INSTR_OURS)
    for py in pythons:
        has_modes = subprocess.run([py, "-c", "from funboost import BoosterParams as B; "
                                    "print('publish_mode' in B.model_fields)"], capture_output=True,
                                   text=True).stdout.strip() == "True"
        for mode in ("confirmed", "pipelined") if has_modes else ("confirmed",):
            a = callgrind(py, "ours.py", [mode, str(n), REDIS_URL], tmp, env)
            b = callgrind(py, "ours.py", [mode, str(2 * n), REDIS_URL], tmp, env)
            print(f"{py}: redis_ack_able push, {mode}: {(b - a) / n:,.0f} instructions per message", flush=True)
    if orig_py and os.path.exists(orig_py):
        with open(os.path.join(tmp, "funboost_config.py"), "w") as f:
            f.write(ORIG_CONFIG)
        with open(os.path.join(tmp, "orig.py"), "w") as f:
            f.write(INSTR_ORIG)
        oenv = {**env, "PYTHONPATH": tmp}
        a = callgrind(orig_py, "orig.py", ["push", str(n)], tmp, oenv)
        b = callgrind(orig_py, "orig.py", ["push", str(2 * n)], tmp, oenv)
        print(f"original 55.0 REDIS_ACK_ABLE push: {(b - a) / n:,.0f} instructions per message", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instructions", type=int, metavar="N", default=0,
                    help="instead of timing: callgrind instructions per redis push (N and 2N pushes)")
    ap.add_argument("--python", action="append", default=[],
                    help="with --instructions: interpreters with funboost installed (default: this one)")
    ap.add_argument("--brokers", default="redis,rabbitmq,kafka")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-redis", type=int, default=10000)
    ap.add_argument("--n-rabbitmq", type=int, default=3000)
    ap.add_argument("--n-kafka", type=int, default=3000)
    # the original's venv that run_all.py --setup-only makes (bench/.venvs/orig), or FUNBOOST_ORIG_PYTHON
    ap.add_argument("--orig-python", default=os.environ.get("FUNBOOST_ORIG_PYTHON",
                                                            os.path.join(HERE, ".venvs", "orig", "bin", "python")))
    a = ap.parse_args()
    if a.instructions:
        instructions(a.instructions, a.python or [sys.executable], a.orig_python)
        return
    rows = []
    for broker in a.brokers.split(","):
        n = getattr(a, f"n_{broker}")
        print(f"{broker}: N = {n}, {a.rounds} alternating rounds", flush=True)
        rows += run_broker(broker, n, a.rounds, a.orig_python)
    print()
    for label, fig in rows:
        print(f"{label:<40} {fig}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        if sys.argv[2] == "raw":
            child_raw(sys.argv[3])
        else:
            child_ours(sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
