"""Kafka benchmark: raw kafka-python, funboost-kafka, and the original funboost 55.0 KAFKA, in one run.

    scripts/kafka_service.sh                                  # Tansu on 127.0.0.1:19092
    bench/.venvs/ours/bin/python bench/kafka_bench.py [N]   # default N = 20000

Every figure comes from its own child process. Consume rates are counted from the first message
received to the last (so the consumer-group join is not in the rate); the join shows separately as
"first msg after". The original funboost runs in its own virtualenv (FUNBOOST_ORIG_KAFKA_PYTHON,
default bench/.venvs/orig/bin/python) in a scratch directory holding its funboost_config.py.
Bootstrap servers: FUNBOOST_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:19092). 2-core machine: ±30 %.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from typing import Optional

SERVERS = os.environ.get("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
ORIG_PY = os.environ.get("FUNBOOST_ORIG_KAFKA_PYTHON", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venvs", "orig", "bin", "python"))
PARTITIONS = 3
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1500}


def report(**figures: float) -> None:
    print("FIGURES " + json.dumps(figures), flush=True)


def body(i: int) -> bytes:
    return json.dumps({"x": i, "extra": {"task_id": uuid.uuid4().hex, "publish_time": time.time()}}).encode()


def new_topic() -> str:
    from kafka.admin import KafkaAdminClient
    topic = f"bench_{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=SERVERS.split(","))
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    admin.close()
    return topic


# ------------------------------------------------------------------ parts (each in a child process)
def part_raw_produce(n: int) -> None:
    from kafka import KafkaProducer
    topic = new_topic()
    producer = KafkaProducer(bootstrap_servers=SERVERS.split(","), acks=1)
    payloads = [body(i) for i in range(n)]
    t = time.perf_counter()
    for p in payloads:
        producer.send(topic, p)
    producer.flush()
    report(rate=n / (time.perf_counter() - t))
    producer.close()


def part_raw_consume(n: int) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    topic = new_topic()
    producer = KafkaProducer(bootstrap_servers=SERVERS.split(","), acks=1, linger_ms=5)
    for i in range(n):
        producer.send(topic, body(i))
    producer.flush()
    consumer = KafkaConsumer(bootstrap_servers=SERVERS.split(","), group_id=topic, enable_auto_commit=False,
                             auto_offset_reset="earliest", **GROUP_TIMEOUTS)
    consumer.subscribe([topic])
    t0 = time.perf_counter()
    got, t_first = 0, None
    while got < n:
        batch = consumer.poll(timeout_ms=1000, max_records=500)
        for recs in batch.values():
            for r in recs:
                json.loads(r.value)
            got += len(recs)
        if batch:
            t_first = t_first or time.perf_counter()
            consumer.commit()
    report(rate=n / (time.perf_counter() - t_first), first=t_first - t0)
    consumer.close()


def _options(**extra) -> dict:
    return {"bootstrap_servers": SERVERS, "num_partitions": PARTITIONS, **GROUP_TIMEOUTS, **extra}


def part_broker_level(n: int) -> None:
    """Our broker without the engine: publish 1000 per call, fetch 500 + ack per batch."""
    from funboost.plugins.broker import OutgoingMessage
    from funboost_kafka.broker import KafkaBroker
    b = KafkaBroker(f"bench_{uuid.uuid4().hex[:10]}", KafkaBroker.parse_options(_options()))
    msgs = [OutgoingMessage(body=body(i).decode(), task_id=f"t{i}") for i in range(n)]
    t = time.perf_counter()
    for i in range(0, n, 1000):
        b.publish(msgs[i:i + 1000])
    pub = n / (time.perf_counter() - t)
    t0 = time.perf_counter()
    got, t_first = 0, None
    while got < n:
        ds = b.fetch(500, 1.0)
        if ds:
            t_first = t_first or time.perf_counter()
        b.ack(ds)
        got += len(ds)
    b.close()
    report(publish=pub, rate=n / (time.perf_counter() - t_first), first=t_first - t0)


def _booster(q: str, counter: list, conc: int, **opts):
    from funboost import BoosterParams, boost
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=q, broker_kind="kafka", broker_exclusive_config=_options(**opts),
                         concurrent_num=conc, state_backend="memory", log_to_console=False, log_level=30,
                         max_retry_times=0))
    def add(x: int, y: int = 1) -> int:
        with lock:
            counter[0] += 1
        return x + y
    return add


def part_ours_push(n: int, wait_for_ack: str = "1") -> None:
    f = _booster(f"bench_{uuid.uuid4().hex[:10]}", [0], 1, wait_for_ack=wait_for_ack == "1")
    f.push(-1)  # topic creation and connections are not part of the rate
    t = time.perf_counter()
    for i in range(n):
        f.push(i)
    from funboost_kafka.broker import _shared
    for p in list(_shared.producers.values()):
        p.flush()  # fire-and-forget mode: count only what the broker holds
    report(rate=n / (time.perf_counter() - t))


def part_ours_push_many(n: int) -> None:
    f = _booster(f"bench_{uuid.uuid4().hex[:10]}", [0], 1)
    f.push(-1)
    t = time.perf_counter()
    f.push_many(range(n))
    report(rate=n / (time.perf_counter() - t))


def part_ours_consume(n: int, conc: str = "50") -> None:
    counter = [0]
    f = _booster(f"bench_{uuid.uuid4().hex[:10]}", counter, int(conc))
    f.push_many(range(n))
    t0 = time.perf_counter()
    f.consume()
    while counter[0] == 0:
        time.sleep(0.001)
    t_first = time.perf_counter()
    while counter[0] < n:
        time.sleep(0.002)
    rate = n / (time.perf_counter() - t_first)
    lag_deadline = time.monotonic() + 10
    while f.get_message_count() != 0 and time.monotonic() < lag_deadline:
        time.sleep(0.05)  # every offset committed (at-least-once bookkeeping is part of the job)
    report(rate=rate, first=t_first - t0, lag_after=f.get_message_count())
    f.stop_consume(10)
    os._exit(0)


ORIG_CONFIG = textwrap.dedent("""
    from funboost.funboost_config_deafult import BrokerConnConfig as _B, FunboostCommonConfig as _F

    class BrokerConnConfig(_B):
        KAFKA_BOOTSTRAP_SERVERS = {servers!r}

    class FunboostCommonConfig(_F):
        pass
""")

ORIG_SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time, uuid
    from funboost import boost, BrokerEnum, BoosterParams
    mode, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    counter, lock = [0], threading.Lock()
    q = "bench_orig_" + uuid.uuid4().hex[:8]

    @boost(BoosterParams(queue_name=q, broker_kind=BrokerEnum.KAFKA, concurrent_num=conc, log_level=30,
                         is_show_message_get_from_broker=False,
                         broker_exclusive_config={"group_id": q, "num_partitions": 3}))
    def add(x, y=1):
        with lock:
            counter[0] += 1
        return x + y

    add.push(-1)  # creates the topic and the producer
    t = time.perf_counter()
    for i in range(n):
        add.push(i)
    add.publisher._producer.flush()
    pub = time.perf_counter() - t
    if mode == "push":
        print("FIGURES " + json.dumps({"rate": n / pub}), flush=True)
        os._exit(0)
    t0 = time.perf_counter()
    add.consume()
    while counter[0] == 0:
        time.sleep(0.001)
    t_first = time.perf_counter()
    while counter[0] < n + 1 and time.perf_counter() - t_first < 300:
        time.sleep(0.002)
    print("FIGURES " + json.dumps({"rate": n / (time.perf_counter() - t_first), "first": t_first - t0}),
          flush=True)
    os._exit(0)
""")


def run_orig(mode: str, n: int, conc: int = 50) -> Optional[dict]:
    if not os.path.exists(ORIG_PY):
        return None
    d = tempfile.mkdtemp(prefix="funboost-orig-kafka-")
    with open(os.path.join(d, "funboost_config.py"), "w") as fh:
        fh.write(ORIG_CONFIG.format(servers=SERVERS.split(",")))
    script = os.path.join(d, "orig_kafka_bench.py")  # the original reads its functions' source
    with open(script, "w") as fh:
        fh.write(ORIG_SCRIPT)
    p = subprocess.run([ORIG_PY, script, mode, str(n), str(conc)], cwd=d, env=dict(os.environ, PYTHONPATH=d),
                       capture_output=True, text=True, timeout=900)
    return _figures(p)


def _figures(p: subprocess.CompletedProcess) -> Optional[dict]:
    for line in p.stdout.splitlines():
        if "FIGURES " in line:  # the original colours its prints: cut the escape codes
            return json.loads(line.split("FIGURES ", 1)[1].split("\x1b")[0].strip())
    sys.stderr.write(p.stdout[-1500:] + p.stderr[-1500:])
    return None


def run_part(name: str, n: int, *args: str) -> Optional[dict]:
    p = subprocess.run([sys.executable, __file__, "--part", name, str(n), *args], capture_output=True, text=True,
                       timeout=900)
    return _figures(p)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print(f"N = {n}, bootstrap = {SERVERS}, {PARTITIONS} partitions")

    def row(label: str, res: Optional[dict], key: str = "rate") -> None:
        if not res:
            print(f"{label:<62} (not run)", flush=True)
            return
        extra = f"   first msg after {res['first']:5.1f} s" if "first" in res else ""
        if "lag_after" in res:
            extra += f"   lag after {res['lag_after']}"
        print(f"{label:<62} {res[key]:>9,.0f} msg/s{extra}", flush=True)

    row("raw kafka-python produce (acks=1, send each, flush)", run_part("raw_produce", n))
    row("raw kafka-python consume (poll 500 + commit per batch)", run_part("raw_consume", n))
    bl = run_part("broker_level", n)
    row("funboost-kafka broker publish x1000 (no engine)", bl, "publish")
    row("funboost-kafka broker fetch 500 + ack (no engine)", bl)
    row("funboost-kafka push_many (batch publish)", run_part("ours_push_many", n))
    small = max(1000, n // 10)
    row(f"funboost-kafka push one by one, wait for ack (N={small})", run_part("ours_push", small, "1"))
    row("funboost-kafka push one by one, wait_for_ack=False", run_part("ours_push", n, "0"))
    row("funboost-kafka consume, 50 threads, safe commits", run_part("ours_consume", n, "50"))
    row("funboost-kafka consume, 1 thread, safe commits", run_part("ours_consume", n, "1"))
    row("original funboost 55.0 KAFKA push (fire and forget)", run_orig("push", n))
    row("original funboost 55.0 KAFKA consume, 50 threads, auto-commit", run_orig("consume", n, 50))
    row("original funboost 55.0 KAFKA consume, 1 thread, auto-commit", run_orig("consume", n, 1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--part":
        globals()["part_" + sys.argv[2]](int(sys.argv[3]), *sys.argv[4:])
    else:
        main()
