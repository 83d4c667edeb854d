"""One command for the benchmark table: every comparison side by side, in alternating rounds.

    python bench/run_all.py                 # full run (long: see docs/benchmarks.md)
    python bench/run_all.py --quick         # about 5 minutes: N=3000, 2 rounds, fewer rows
    python bench/run_all.py --suites redis,kafka --rounds 5 --n 20000
    python bench/run_all.py --setup-only    # only create / check the virtualenvs
    python bench/run_all.py --no-docs       # do not rewrite docs/benchmarks.md

What it does:

1. Creates the virtualenvs it needs under ``bench/.venvs/`` (git-ignored; ``FUNBOOST_BENCH_VENVS`` moves
   it): ``ours`` with this checkout's core and broker plugins (editable) and the raw clients, Celery,
   dramatiq, huey and rq they bring; ``orig`` with the original ``funboost==55.0`` from PyPI and the broker clients it
   uses. A venv is rebuilt when its package list changes (a stamp file records it).
2. Runs each suite (a bench script and its anchors: the raw client, the original funboost, Celery,
   dramatiq, huey or rq) for ``--rounds`` rounds. In every round each side runs once, in a fresh process, through
   ``bench/_call.py`` (the bench scripts' own measuring functions); the order of the sides is reversed
   every other round, so a slow moment of the shared machine does not always hit the same side.
3. Prints one table: per figure the median over the rounds with its spread (half the range, as a
   percentage of the median), the anchor's figure, and the ratio (median of the per-round ratios, with the
   lowest and highest round).
4. Rewrites the region between ``<!-- run_all:begin -->`` and ``<!-- run_all:end -->`` in
   ``docs/benchmarks.md`` and writes every raw sample to ``bench/results/run_all-<time>.json``.

A suite whose server does not answer is skipped with its reason (the table says so). Nothing here
asserts a timing. The machine this was written on has 2 cores shared with other jobs: read single
figures as +-30 %, ratios from alternating rounds as the trustworthy part.

This module imports only the standard library at the top (the pure functions ``aggregate``,
``format_markdown`` and ``replace_region`` are tested in core/tests/test_bench_run_all.py).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
from _common import machine_info, scratch_env  # noqa: E402

VENV_DIR = os.environ.get("FUNBOOST_BENCH_VENVS", os.path.join(BENCH_DIR, ".venvs"))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
RESULT_RE = re.compile(r"(?<![A-Za-z0-9_])(BENCHRESULT|RESULT2|RESULT|FIGURES|CALLRSS) (\{)")

REDIS_URL = os.environ.get("FUNBOOST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FUNBOOST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
KAFKA = os.environ.get("FUNBOOST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
CELERY_REDIS = os.environ.get("FUNBOOST_CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/13")
CELERY_AMQP = os.environ.get("FUNBOOST_CELERY_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_DSN = os.environ.get("FUNBOOST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("FUNBOOST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_HOST = os.environ.get("FUNBOOST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FUNBOOST_MQTT_PORT", "1883"))


# ---------------------------------------------------------------- virtualenvs
def _plugin(name: str, extra: str = "") -> list[str]:
    return ["-e", os.path.join(ROOT, "plugins", f"funboost-{name}") + extra]


VENVS: dict[str, list[str]] = {
    # this checkout: core and every broker plugin with a bench (funboost-redis brings hiredis), which bring
    # the raw clients and frameworks they are compared with; matplotlib for the plots of scale_bench.py
    "ours": ["-e", os.path.join(ROOT, "core"), *_plugin("sqlite"), *_plugin("redis", "[hiredis]"),
             *_plugin("rabbitmq"), *_plugin("kafka"), *_plugin("celery"), *_plugin("dramatiq"), *_plugin("huey"),
             *_plugin("rq"), *_plugin("tcp"), *_plugin("http"), *_plugin("grpc"), *_plugin("nats"), *_plugin("mqtt"),
             *_plugin("postgres"), *_plugin("sqlalchemy", "[mysql,postgresql]"), *_plugin("nameko"),
             *_plugin("mysql-cdc"), "pgqueuer>=1.6", "asyncpg", "matplotlib>=3.7"],
    # the original funboost, as a user moving from it has it: its own dependencies bring redis-py,
    # amqpstorm and persist-queue; its KAFKA kind needs kafka-python and its SQLACHEMY kind SQLAlchemy,
    # sqlalchemy_utils and the database drivers, which it does not declare
    "orig": ["funboost==55.0", "kafka-python>=2.0", "sqlalchemy", "sqlalchemy_utils", "pymysql", "psycopg2-binary"],
}
# checked after installing: the original imports its broker clients lazily, so a missing one shows only here
VENV_CHECKS: dict[str, str] = {
    "ours": "import funboost, funboost_sqlite, funboost_redis, funboost_rabbitmq, funboost_kafka, "
            "funboost_celery, funboost_dramatiq, funboost_huey, funboost_rq, funboost_tcp, funboost_http, "
            "funboost_grpc, funboost_nats, funboost_mqtt, funboost_postgres, funboost_sqlalchemy, funboost_nameko, "
            "funboost_mysql_cdc, pika, kafka, redis, celery, dramatiq, huey, rq, pgqueuer, asyncpg, matplotlib",
    "orig": "import importlib.metadata as m; assert m.version('funboost') == '55.0', m.version('funboost'); "
            "import redis, amqpstorm, kafka, persistqueue, sqlalchemy, sqlalchemy_utils, pymysql, psycopg2",
}


def venv_python(name: str) -> str:
    return os.path.join(VENV_DIR, name, "bin", "python")


def _stamp(name: str, base_python: str) -> str:
    spec = json.dumps([base_python, VENVS[name], VENV_CHECKS[name]])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def ensure_venv(name: str, base_python: str = sys.executable, log: Callable[[str], None] = print) -> str:
    """Create (or reuse) ``VENV_DIR/name`` with its packages; return its python."""
    path = os.path.join(VENV_DIR, name)
    stamp_file = os.path.join(path, ".bench-stamp")
    stamp = _stamp(name, base_python)
    py = venv_python(name)
    if os.path.exists(py) and os.path.exists(stamp_file):
        with open(stamp_file) as fh:
            if fh.read().strip() == stamp:
                return py
    log(f"setting up virtualenv {path} ({' '.join(VENVS[name])}) ...")
    if os.path.exists(path):
        shutil.rmtree(path)
    subprocess.run([base_python, "-m", "venv", path], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *VENVS[name]], check=True)
    # the check runs in a scratch dir: the original writes config files into its working directory on import
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([py, "-c", VENV_CHECKS[name]], cwd=d, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"virtualenv {name}: check failed: {p.stderr.strip()[-800:]}")
    with open(stamp_file, "w") as fh:
        fh.write(stamp + "\n")
    return py


# ---------------------------------------------------------------- services
def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    hp = url.split("://", 1)[-1].split("@")[-1].split("/")[0].split(",")[0]
    host, _, port = hp.partition(":")
    return host or "127.0.0.1", int(port or default_port)


def _own_service(host: str, port: int, script: str, what: str, start: bool = True) -> Optional[str]:
    """A server the project starts itself: when nothing answers, run ``scripts/<script>`` (idempotent, it
    waits until the server accepts connections) if ``start``; None when it answers, else why not."""
    path = os.path.join(ROOT, "scripts", script)
    if start and not _port_open(host, port) and os.path.exists(path):
        subprocess.run(["bash", path], capture_output=True)
    return None if _port_open(host, port) else f"no {what} (bash scripts/{script})"


def service_problem(name: str) -> Optional[str]:
    """None when the service answers, else why the suite cannot run."""
    if name == "redis":
        return None if _port_open(*_host_port(REDIS_URL, 6379)) else f"no Redis at {REDIS_URL}"
    if name == "rabbitmq":
        return None if _port_open(*_host_port(AMQP_URL, 5672)) else "no RabbitMQ at " + AMQP_URL.split("@")[-1]
    if name == "kafka":  # the project's own Kafka-wire broker, when the default address is asked for
        return _own_service(*_host_port(KAFKA, 9092), "kafka_service.sh", f"Kafka at {KAFKA}",
                            start=KAFKA == "127.0.0.1:19092")
    if name == "postgres":
        return None if _port_open(*_host_port(POSTGRES_DSN, 5432)) else f"no PostgreSQL at {POSTGRES_DSN}"
    if name == "mysql":
        return None if _port_open("127.0.0.1", 3306) else "no MariaDB/MySQL at 127.0.0.1:3306"
    if name == "mysql_cdc":  # the project's own MariaDB with a ROW binlog
        port = int(os.environ.get("FUNBOOST_MARIADB_CDC_PORT", "3307"))
        return _own_service("127.0.0.1", port, "mariadb_cdc_service.sh", f"CDC MariaDB at 127.0.0.1:{port}")
    if name == "nats":  # an open port does not prove JetStream is on: the parts then fail, with the reason
        return None if _port_open(*_host_port(NATS_URL, 4222)) else f"no NATS at {NATS_URL} (needs -js)"
    if name == "mqtt":
        return None if _port_open(MQTT_HOST, MQTT_PORT) else f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT}"
    return None


# ---------------------------------------------------------------- suites
@dataclass
class Part:
    """One side of a comparison: ``module.func(*args)`` in a fresh process of venv ``venv``.

    ``figures`` maps a figure name to where it is in the part's output: ``"TAG.key"`` with TAG one of
    BENCHRESULT (a returned dict or ``_common.emit``), RESULT / RESULT2 / FIGURES (the scripts' own lines)."""
    side: str
    module: str
    func: str
    args: Sequence[Any]
    figures: dict[str, str]
    venv: str = "ours"
    timeout: float = 1800
    own_rss: bool = True  # False: the function runs the measurement in another process (RSS unknown here)
    full_only: bool = False  # context only: left out by --quick (with its rows)


@dataclass
class Row:
    """A line of the table: figure ``ours`` against figure ``anchor`` (ids ``side:figure``).

    ``target``: the ratio ours / anchor must be at least this (at most, with ``lower_is_better``: latencies).
    ``anchor`` may be empty for a figure with an absolute target only (``abs_target``, in ``unit``)."""
    label: str
    ours: str
    anchor: str
    anchor_label: str
    target: Optional[float] = None
    note: str = ""
    unit: str = "msg/s"
    lower_is_better: bool = False
    abs_target: Optional[float] = None


@dataclass
class Suite:
    name: str
    script: str
    needs: tuple[str, ...]
    parts: list[Part]
    rows: list[Row]
    venvs: tuple[str, ...] = ("ours",)
    unit: str = "msg/s"


def has_publish_mode() -> bool:
    """Whether this checkout's BoosterParams has ``publish_mode`` (issue 24 item 3), read from the source
    so that the driver needs no funboost import."""
    try:
        with open(os.path.join(ROOT, "core", "src", "funboost", "params.py")) as fh:
            return "publish_mode" in fh.read()
    except OSError:
        return False


def _bench_figures(*keys: str) -> dict[str, str]:
    """Figures a part returns in its dict (``_common.emit`` / a returned dict), each under its own name."""
    return {k: f"BENCHRESULT.{k}" for k in keys}


NO_PUBLISH_MODE = "no publish_mode in this checkout yet"


def _pipelined_part(side: str, kind: str, n: int, pipe: bool, options: Optional[dict] = None,
                    full_only: bool = False) -> list[Part]:
    """The ``publish_mode="pipelined"`` push side of ``kind`` (issue 24 item 3), with ``options`` added to
    its ``broker_exclusive_config``; none without publish_mode."""
    args = [kind, n] + ([json.dumps(options)] if options else [])
    return [Part(side, "run_all", "pipelined_push_part", args, {"publish": "BENCHRESULT.rate"},
                 full_only=full_only)] if pipe else []


def _pipelined_row(label: str, side: str, anchor: str, anchor_label: str, pipe: bool) -> Row:
    """The row of :func:`_pipelined_part` (a dash, with the reason, without publish_mode)."""
    return Row(label, f"{side}:publish", anchor, anchor_label, 1.0, note="" if pipe else NO_PUBLISH_MODE)


def _plain_vs_funboost(name: str, script: str, needs: tuple[str, ...], args: list[Any], kind_label: str,
                       push_anchor: str, consume_anchor: str) -> Suite:
    """A framework suite (Celery, dramatiq, huey, rq): the framework's own API against funboost's kind on it,
    both ``script.run_plain`` / ``script.run_funboost`` (``*args``) returning publish and consume rates, and
    ``script.push_alternating(*args, rounds)`` the two pushes alternating in one process."""
    return Suite(name, f"{script}.py", needs, [
        Part("plain", script, "run_plain", list(args), _bench_figures("publish", "consume")),
        Part("funboost", script, "run_funboost", list(args), _bench_figures("publish", "consume")),
        # the push row: both sides alternating in one process (``_common.alternate_push``), 10 rounds; a
        # one-by-one push is a round trip whose cost drifts within seconds, so the two one-shot parts above
        # compare two moments of the host (they swung 0.78-1.02x within one run): they stay as context
        Part("push_alt", script, "push_alternating", list(args) + [10],
             _bench_figures("plain", "funboost", "plain_cpu_us", "funboost_cpu_us")),
    ], [
        Row(f"{kind_label}, push", "push_alt:funboost", "push_alt:plain",
            f"{push_anchor}, alternating in one process (median of 10 rounds)", 0.9),
        Row(f"{kind_label}, CPU per push", "push_alt:funboost_cpu_us", "push_alt:plain_cpu_us",
            f"{push_anchor}, CPU per push", unit="µs", lower_is_better=True, note="context: this process's CPU"),
        Row(f"{kind_label}, push (separate processes)", "funboost:publish", "plain:publish", push_anchor,
            note="context: one pass each, in turn"),
        Row(f"{kind_label}, consume", "funboost:consume", "plain:consume", consume_anchor, 0.9),
    ])


def build_suites(n: int, quick: bool) -> list[Suite]:
    """The comparisons. ``n`` messages per figure; slow sides get fewer (their rate is what matters).
    ``quick`` leaves out the sides that only give context (and their rows)."""
    small = max(500, n // 10)  # sides at a few hundred to a few thousand msg/s
    orig_sqlite_n = min(n, 500 if quick else 2000)
    pipe = has_publish_mode()
    th = 50
    S: list[Suite] = []

    S.append(Suite("core", "core_bench.py", (), [
        Part("tpe", "core_bench", "part_tpe", [n, th], _bench_figures("submit", "e2e")),
        Part("memory", "core_bench", "part_ours", ["memory", n, th],
             _bench_figures("publish", "batch", "consume", "e2e")),
        Part("orig_memory", "run_all", "orig_core_part", ["MEMORY_QUEUE", n, th, 1],
             _bench_figures("publish", "consume", "e2e")),
        Part("sqlite", "core_bench", "part_ours", ["sqlite", n, th],
             _bench_figures("publish", "batch", "consume", "e2e")),
        Part("orig_sqlite", "run_all", "orig_core_part", ["SQLITE_QUEUE", orig_sqlite_n, th, 0],
             _bench_figures("publish", "consume")),
    ], [
        Row("memory, end to end", "memory:e2e", "tpe:e2e", "ThreadPoolExecutor(50), end to end", 0.7),
        Row("memory, push 1 by 1", "memory:publish", "orig_memory:publish", "original MEMORY_QUEUE push"),
        Row("memory, consume", "memory:consume", "orig_memory:consume", "original MEMORY_QUEUE consume", 2.0),
        Row("sqlite, push 1 by 1", "sqlite:publish", "orig_sqlite:publish",
            f"original SQLITE_QUEUE push (N={orig_sqlite_n})", 5.0),
        Row("sqlite, consume", "sqlite:consume", "orig_sqlite:consume",
            f"original SQLITE_QUEUE consume (N={orig_sqlite_n})", 20.0),
    ], venvs=("ours", "orig")))

    S.append(Suite("sqlite", "sqlite_bench.py", (), [
        Part("raw", "sqlite_bench", "part_raw", [n], {
            "one": "BENCHRESULT.raw sqlite3 BEGIN/INSERT/COMMIT, 1 per transaction",
            "batch": "BENCHRESULT.raw sqlite3 executemany x1000"}),
        Part("broker", "sqlite_bench", "part_broker", [n], {
            "one": "BENCHRESULT.broker publish, 1 per call", "batch": "BENCHRESULT.broker publish, batches of 1000",
            "fetch_ack": "BENCHRESULT.broker fetch(50)+ack, 1 thread"}),
    ], [
        Row("broker publish, 1 per call", "broker:one", "raw:one", "raw sqlite3, 1 INSERT per transaction"),
        Row("broker publish, batches of 1000", "broker:batch", "raw:batch", "raw sqlite3 executemany x1000"),
    ]))

    kind = "redis_ack_able"
    S.append(Suite("redis", "redis_bench.py", ("redis",), [
        Part("raw_pub", "redis_bench", "part_raw_lpush", [n], {"publish": "RESULT.rate"}),
        Part("raw_con", "redis_bench", "part_raw_lrange_ltrim", [n], {"consume": "RESULT.rate"}),
        Part("ack_push", "redis_bench", "part_ours_push", [n, kind], {"publish": "RESULT.rate"}),
        Part("ack_batch", "redis_bench", "part_ours_batch", [n, kind], {"publish": "RESULT.rate"}, full_only=True),
        Part("ack_con", "redis_bench", "part_ours_consume", [n, kind], {"consume": "RESULT.rate"}),
        Part("orig_ack_push", "redis_bench", "run_orig", ["push", "REDIS_ACK_ABLE", n], {"publish": "BENCHRESULT.rate"}),
    ] + _pipelined_part("pipe_push", kind, n, pipe) + [
        Part("orig_con", "redis_bench", "run_orig", ["consume", "REDIS", n], {"consume": "BENCHRESULT.rate"}),
    ] + ([] if quick else [
        Part("broker", "redis_bench", "part_broker_batch", [n, kind],
             {"publish": "RESULT.rate", "fetch_ack": "RESULT2.rate"}),
        Part("plain_push", "redis_bench", "part_ours_push", [n, "redis"], {"publish": "RESULT.rate"}),
        Part("orig_ack_con", "redis_bench", "run_orig", ["consume", "REDIS_ACK_ABLE", n],
             {"consume": "BENCHRESULT.rate"}),
    ]), [
        Row("redis_ack_able push 1 by 1", "ack_push:publish", "orig_ack_push:publish",
            "original REDIS_ACK_ABLE push", 1.5),
        _pipelined_row("redis_ack_able push 1 by 1, pipelined", "pipe_push", "orig_ack_push:publish",
                       "original REDIS_ACK_ABLE push", pipe),
        Row("redis_ack_able consume", "ack_con:consume", "orig_con:consume", "original REDIS (unsafe) consume", 2.5),
        Row("redis_ack_able push_many", "ack_batch:publish", "raw_pub:publish", "raw redis-py pipelined LPUSH x1000"),
        Row("redis_ack_able consume", "ack_con:consume", "raw_con:consume", "raw redis-py LRANGE+LTRIM x1000"),
    ] + ([] if quick else [
        Row("redis push 1 by 1", "plain_push:publish", "orig_ack_push:publish", "original REDIS_ACK_ABLE push"),
        Row("redis_ack_able consume", "ack_con:consume", "orig_ack_con:consume", "original REDIS_ACK_ABLE consume"),
        Row("redis_ack_able broker fetch(500)+ack", "broker:fetch_ack", "raw_con:consume",
            "raw redis-py LRANGE+LTRIM x1000"),
    ])))

    conf_n = max(1000, small // 2)
    orig_push_label = "original RABBITMQ_AMQPSTORM push (no confirms), until stored"
    S.append(Suite("rabbitmq", "rabbitmq_bench.py", ("rabbitmq",), [
        Part("raw", "rabbitmq_bench", "raw_pika", [n], {
            "publish": "BENCHRESULT.raw pika publish 1-by-1, no confirms",
            "consume": "BENCHRESULT.raw pika consume, prefetch 100, ack each"}),
        # 10 alternating rounds inside the part: the confirm's fsync latency drifts with the host's load
        Part("confirmed", "rabbitmq_bench", "confirmed_one_by_one", [conf_n, 10], {
            "same": "BENCHRESULT.raw pika publish 1-by-1, confirmed, same message and queue arguments "
                    "(median of rounds)",
            "raw": "BENCHRESULT.raw pika publish 1-by-1, confirmed (median of rounds)",
            "ours": "BENCHRESULT.ours push 1-by-1, confirmed (median of rounds)"}),
        Part("ours", "rabbitmq_bench", "ours", [n], {
            "batch": "BENCHRESULT.ours push_many (batches of 1000), confirmed",
            "consume": "BENCHRESULT.ours consume, manual ack (threads 50)"}),
    ] + _pipelined_part("pipe", "rabbitmq", n, pipe) + _pipelined_part(
        "pipe_noprio", "rabbitmq", n, pipe, {"max_priority": 0}, full_only=True) + [
        Part("orig", "run_all", "orig_rabbitmq_part", [n], {
            "publish": "BENCHRESULT.original 55.0 RABBITMQ_AMQPSTORM push 1-by-1 (no confirms)",
            "consume": "BENCHRESULT.original 55.0 RABBITMQ_AMQPSTORM consume (threads 50)"}, own_rss=False),
    ], [
        Row("push 1 by 1, confirmed", "confirmed:ours", "orig:publish",
            orig_push_label, note="pipelined mode: issue 24 item 3"),
        # the raw client doing the same work: our message (envelope-sized body, message id) to a queue
        # declared as ours (priorities 0..10); then pika's plainest publish, for context
        Row("push 1 by 1, confirmed", "confirmed:ours", "confirmed:same",
            "raw pika, confirmed 1 by 1, same message and queue arguments", 0.8),
        Row("push 1 by 1, confirmed", "confirmed:ours", "confirmed:raw",
            "raw pika, confirmed 1 by 1, small body, queue without priorities",
            note="context: the priority queue costs the server ~10 %"),
        _pipelined_row("push 1 by 1, pipelined", "pipe", "orig:publish",
                       orig_push_label, pipe),
        # the original declares its queue without x-max-priority; ours has priorities 0..10 by default, which
        # costs RabbitMQ's queue process ~10 % more per message: the same queue type on both sides
        Row("push 1 by 1, pipelined, queue without priorities (max_priority=0)", "pipe_noprio:publish",
            "orig:publish", orig_push_label,
            note="the original's queue type" if pipe else NO_PUBLISH_MODE),
        Row("push_many, confirmed", "ours:batch", "orig:publish", orig_push_label),
        Row("consume, manual ack", "ours:consume", "orig:consume", "original RABBITMQ_AMQPSTORM consume"),
        Row("consume, manual ack", "ours:consume", "raw:consume", "raw pika, prefetch 100, ack each"),
    ], venvs=("ours", "orig")))

    S.append(Suite("kafka", "kafka_bench.py", ("kafka",), [
        Part("raw_pub", "kafka_bench", "part_raw_produce", [n], {"publish": "FIGURES.rate"}, full_only=True),
        Part("raw_con", "kafka_bench", "part_raw_consume", [n], {"consume": "FIGURES.rate"}, full_only=True),
        Part("push", "kafka_bench", "part_ours_push", [small, "1"], {"publish": "FIGURES.rate"}),
        Part("batch", "kafka_bench", "part_ours_push_many", [n], {"publish": "FIGURES.rate"}, full_only=True),
    ] + _pipelined_part("pipe", "kafka", n, pipe) + [
        Part("con", "kafka_bench", "part_ours_consume", [n, "50"], {"consume": "FIGURES.rate"}),
        Part("orig_push", "kafka_bench", "run_orig", ["push", n], {"publish": "BENCHRESULT.rate"},
             own_rss=False),
        Part("orig_con", "kafka_bench", "run_orig", ["consume", n, 50], {"consume": "BENCHRESULT.rate"},
             own_rss=False),
    ], [
        Row(f"push 1 by 1, wait for ack (N={small})", "push:publish", "orig_push:publish",
            "original KAFKA push (fire and forget)", note="pipelined mode: issue 24 item 3"),
        _pipelined_row("push 1 by 1, pipelined", "pipe", "orig_push:publish", "original KAFKA push (fire and forget)",
                       pipe),
        Row("push_many", "batch:publish", "raw_pub:publish", "raw kafka-python send each + flush"),
        Row("consume, 50 threads", "con:consume", "orig_con:consume", "original KAFKA consume (auto-commit)"),
        Row("consume, 50 threads", "con:consume", "raw_con:consume", "raw kafka-python poll 500 + commit"),
    ], venvs=("ours", "orig")))

    cn = min(n, 3000) if not quick else min(n, 500)
    amqp = {"celery": CELERY_AMQP, "dramatiq": AMQP_URL.rsplit("/", 1)[0] + "/%2F"}
    for fw, push_anchor, consume_anchor in (
            ("celery", "plain Celery .delay()", "plain Celery worker (threads 8)"),
            ("dramatiq", "plain dramatiq .send()", "plain dramatiq Worker (threads 8, default middleware)")):
        for fam, url, need in (("redis", CELERY_REDIS, "redis"), ("amqp", amqp[fw], "rabbitmq")):
            if quick and fam == "amqp":
                continue
            suite = _plain_vs_funboost(f"{fw}-{fam}", f"{fw}_bench", (need,), [url, cn, 8],
                                       f"{fw.upper()} kind on {fam}", push_anchor, consume_anchor)
            if fw == "dramatiq":  # context: plain dramatiq on the kind's own broker (its two middleware)
                suite.parts.append(Part("plain_kind", "dramatiq_bench", "run_plain", [url, cn, 8, "kind"],
                                        _bench_figures("consume"), full_only=True))
                suite.rows.append(Row(f"{fw.upper()} kind on {fam}, consume", "funboost:consume",
                                      "plain_kind:consume", "plain dramatiq Worker on the kind's broker "
                                      "(Retries, CurrentMessage only)", note="the funboost layer alone"))
            S.append(suite)
    hn = min(n, 3000) if not quick else min(n, 500)
    for name, script, funboost_kind, plain_label in (
            ("huey", "huey_bench", "HUEY", "plain huey (RedisHuey, 8 thread workers)"),
            ("rq", "rq_bench", "RQ", "plain rq (Queue.enqueue, 8 SimpleWorker threads)")):
        S.append(_plain_vs_funboost(name, script, ("redis",), [hn, 8], f"{funboost_kind} kind", plain_label,
                                    plain_label))
    S += transport_suites(n, small)
    # issue 20, postgres: funboost-postgres beside raw psycopg and PgQueuer (pgqueuer + asyncpg in "ours");
    # each part makes a schema of its own and drops it. The consume parts get at least 20,000 messages: a
    # shorter drain takes a fraction of a second and its ratio is noise.
    pg_n = max(n, 20000)
    S.append(Suite("postgres", "postgres_bench.py", ("postgres",), [
        Part("raw", "postgres_bench", "part_raw", [n], {
            "publish": "BENCHRESULT.raw psycopg: INSERT from unnest x1000",
            "consume": "BENCHRESULT.raw psycopg: SKIP LOCKED claim 100 + DELETE, 1 thread"}),
        Part("broker", "postgres_bench", "part_broker", [n], {
            "batch": "BENCHRESULT.broker publish, batches of 1000",
            "fetch_ack": "BENCHRESULT.broker fetch(100)+ack, 1 thread"}),
        Part("e2e", "postgres_bench", "part_e2e", [pg_n, th], {
            "publish": "BENCHRESULT.end to end: push_many (batches of 1000)",
            "consume": f"BENCHRESULT.end to end: consume ({th} threads)",
            "cpu": "BENCHRESULT.cpu_us: end to end consume"}),
        Part("pgq", "postgres_bench", "part_pgqueuer", [pg_n, 100], {
            "publish": "BENCHRESULT.PgQueuer: batch enqueue x1000",
            "consume": "BENCHRESULT.PgQueuer: consume (batch_size 100)",
            "cpu": "BENCHRESULT.cpu_us: PgQueuer consume (batch_size 100)"}),
        Part("pgq10", "postgres_bench", "part_pgqueuer", [pg_n, 10],
             {"consume": "BENCHRESULT.PgQueuer: consume (batch_size 10)"}, full_only=True),
    ], [
        Row(f"consume, @boost {th} threads, no-op", "e2e:consume", "", "", abs_target=5000.0),
        Row(f"consume, @boost {th} threads, no-op", "e2e:consume", "pgq:consume",
            "PgQueuer QueueManager drain, batch_size 100", 1.5),
        Row("client CPU per consumed message", "e2e:cpu", "pgq:cpu", "PgQueuer, batch_size 100", unit="µs/msg",
            lower_is_better=True, note="the client process only (PostgreSQL's CPU not in it)"),
        Row("broker publish, batches of 1000", "broker:batch", "raw:publish", "raw psycopg INSERT … FROM unnest ×1000",
            abs_target=30000.0),
        Row("push_many", "e2e:publish", "pgq:publish", "PgQueuer batch enqueue ×1000"),
        Row("broker fetch(100)+ack, 1 thread", "broker:fetch_ack", "raw:consume",
            "raw psycopg SKIP LOCKED claim 100 + DELETE, 1 thread"),
        Row(f"consume, @boost {th} threads, no-op", "e2e:consume", "pgq10:consume",
            "PgQueuer drain, batch_size 10 (its default)"),
    ]))

    # issue 20, sqlalchemy: funboost-sqlalchemy against the original's SQLACHEMY kind on the same database
    # (the original runs at ~300-400 msg/s: it gets the small N)
    sa_parts: list[Part] = []
    sa_rows: list[Row] = []
    for db in ("MariaDB", "PostgreSQL"):
        side = db.lower()
        sa_parts += [
            Part(side, "sqlalchemy_bench", "part_ours", [db, n, th], {
                "publish": f"BENCHRESULT.{db}: ours push_many",
                "consume": f"BENCHRESULT.{db}: ours consume ({th} threads)"}),
            Part(f"orig_{side}", "sqlalchemy_bench", "part_orig", [db, small, th], {
                "publish": f"BENCHRESULT.{db}: original 55.0 SQLACHEMY push 1 by 1",
                "consume": f"BENCHRESULT.{db}: original 55.0 SQLACHEMY consume ({th} threads)"}),
        ]
        sa_rows += [
            Row(f"{db}, consume {th} threads", f"{side}:consume", f"orig_{side}:consume",
                f"original SQLACHEMY consume (N={small})", 3.0),
            Row(f"{db}, push_many", f"{side}:publish", f"orig_{side}:publish",
                f"original SQLACHEMY push 1 by 1, it has no batch (N={small})"),
        ]
    S.append(Suite("sqlalchemy", "sqlalchemy_bench.py", ("postgres", "mysql"), sa_parts, sa_rows,
                   venvs=("ours", "orig")))
    # issue 16: the funboost layer costs at most 10 % of nameko's call throughput
    nameko_figs = _bench_figures("publish", "consume", "publish_cpu_us", "consume_cpu_us")
    S.append(Suite("nameko", "nameko_bench.py", ("rabbitmq",), [
        # own_rss=False: on both sides part of the consuming work runs in a child (the nameko service process)
        Part("plain", "nameko_bench", "run_plain", [small, 8], nameko_figs, own_rss=False),
        Part("funboost", "nameko_bench", "run_funboost", [small, 8], nameko_figs, own_rss=False),
    ], [
        Row("NAMEKO kind, push (call_async request)", "funboost:publish", "plain:publish",
            "plain nameko ClusterRpcProxy call_async", 0.9),
        Row("NAMEKO kind, consume (max_workers 8)", "funboost:consume", "plain:consume",
            "plain nameko ServiceRunner (max_workers 8)", 0.9),
        Row("NAMEKO kind, consume CPU per call", "funboost:consume_cpu_us", "plain:consume_cpu_us",
            "plain nameko service process", unit="µs CPU/msg", lower_is_better=True,
            note="context: every process on the path, start-up included"),
    ]))

    # issue 18: rows/s through funboost >= 0.7x a raw BinLogStreamReader loop. funboost's figure includes
    # consume()'s start-up (~0.3 s: the reader process): with fewer rows it dominates
    cdc_n = max(n, 20000)
    S.append(Suite("mysql_cdc", "mysql_cdc_bench.py", ("mysql_cdc",), [
        Part("raw", "mysql_cdc_bench", "run_raw", [cdc_n], _bench_figures("rows")),
        # own_rss=False: the default reader decodes the binlog in a child process (~40 MB) not counted here
        Part("funboost", "mysql_cdc_bench", "run_funboost", [cdc_n, 8, 0], _bench_figures("rows"), own_rss=False),
        Part("thread", "mysql_cdc_bench", "run_funboost", [cdc_n, 8, 1], _bench_figures("rows"), full_only=True),
    ], [
        Row(f"MYSQL_CDC inserted rows, 8 threads (N={cdc_n})", "funboost:rows", "raw:rows",
            "raw BinLogStreamReader loop", 0.7, unit="rows/s"),
        Row("MYSQL_CDC inserted rows, reader in a thread", "thread:rows", "raw:rows",
            "raw BinLogStreamReader loop", unit="rows/s", note='context: reader="thread"'),
    ], unit="rows/s"))

    # issue 20: JetStream with the same acks as raw nats-py; core sync_call (latency-bound) is context only
    S.append(Suite("nats", "nats_bench.py", ("nats",), [
        Part("raw_pub", "nats_bench", "part_raw_js_publish", [n], {"publish": "BENCHRESULT.rate"}),
        Part("pub", "nats_bench", "part_fb_js_publish", [n], {"publish": "BENCHRESULT.rate"}),
        Part("raw_con", "nats_bench", "part_raw_js_consume", [n], {"consume": "BENCHRESULT.rate"}),
        Part("con", "nats_bench", "part_fb_js_consume", [n], {"consume": "BENCHRESULT.rate"}),
        Part("raw_req", "nats_bench", "part_raw_core_request", [small], {"calls": "BENCHRESULT.rate"},
             full_only=True),
        Part("sync_call", "nats_bench", "part_fb_core_sync_call", [small], {"calls": "BENCHRESULT.rate"},
             full_only=True),
    ], [
        Row("JetStream push_many, PubAck each", "pub:publish", "raw_pub:publish",
            "raw nats-py js.publish, 512 PubAcks in flight", 0.6),
        Row("JetStream consume, ack after the run", "con:consume", "raw_con:consume",
            "raw nats-py pull fetch(100), ack each", 0.6),
        Row("NATS core sync_call, sequential", "sync_call:calls", "raw_req:calls",
            "raw nats-py nc.request, sequential", note="context: one round trip at a time", unit="calls/s"),
    ]))

    # Mosquitto's default max_queued_messages (1000 per client) drops QoS 1 messages for a consumer that falls
    # further behind: end to end stays at or below it (a part that loses messages reports no figure)
    mqtt_e2e_n = min(small, 1000)
    S.append(Suite("mqtt", "mqtt_bench.py", ("mqtt",), [
        Part("raw_pub", "mqtt_bench", "part_raw_publish", [n], {"publish": "BENCHRESULT.rate"}),
        Part("pub", "mqtt_bench", "part_fb_publish", [n], {"publish": "BENCHRESULT.rate"}),
        Part("raw_e2e", "mqtt_bench", "part_raw_e2e", [mqtt_e2e_n], {"e2e": "BENCHRESULT.rate"}),
        Part("e2e", "mqtt_bench", "part_fb_e2e", [mqtt_e2e_n], {"e2e": "BENCHRESULT.rate"}),
    ], [
        Row("QoS 1 push_many, all PUBACKs", "pub:publish", "raw_pub:publish",
            "raw paho publish QoS 1, all PUBACKs", 0.6),
        Row(f"QoS 1 end to end, PUBACK after the run (N={mqtt_e2e_n})", "e2e:e2e", "raw_e2e:e2e",
            "raw paho subscriber, manual_ack, receive maximum 64", 0.6),
    ]))
    for suite in S:  # --quick leaves out context-only sides; a row needs both of its sides
        suite.parts = [p for p in suite.parts if not (quick and p.full_only)]
        sides = {p.side for p in suite.parts}
        suite.rows = [r for r in suite.rows
                      if r.ours.split(":")[0] in sides and (not r.anchor or r.anchor.split(":")[0] in sides)]
    return S


def _call_rows(side: str, anchor: str, anchor_label: str, targets: tuple[Optional[float], ...] = (None, None, None),
               what: str = "sync_call", note: str = "") -> list[Row]:
    """p50 / p99 (ms, sequential calls) and calls/s (8 threads) of ``side`` against ``anchor`` (ids without the
    figure), from ``part_calls`` of the transport benches; ``targets``: ceilings for p50 and p99, floor for calls/s."""
    p50, p99, calls = targets
    return [Row(f"{what} p50, 1 thread", f"{side}:p50", f"{anchor}:p50", anchor_label, p50, note, unit="ms",
                lower_is_better=True),
            Row(f"{what} p99, 1 thread", f"{side}:p99", f"{anchor}:p99", anchor_label, p99, note, unit="ms",
                lower_is_better=True),
            Row(f"{what} calls/s, 8 threads", f"{side}:calls", f"{anchor}:calls", anchor_label, calls, note)]


def transport_suites(n: int, small: int) -> list[Suite]:
    """tcp, http and grpc (issue 17: side by side, grpc in the same table): each side measured once per round
    in a process of its own, against a server process of its own (loopback)."""
    calls_n, threads = small, 8
    figures = _bench_figures("p50", "p99", "calls")

    def part(side: str, module: str, which: str, full_only: bool = False) -> Part:
        return Part(side, module, "part_calls", [which, calls_n, threads], figures, full_only=full_only)

    raw_tcp = "raw asyncio length-prefixed JSON server, a blocking socket per thread"
    raw_http = "raw uvicorn app, same urllib3 client"
    return [
        Suite("tcp", "tcp_bench.py", (), [
            part("raw", "tcp_bench", "raw"),
            part("raw_client", "tcp_bench", "raw_tcp_client", full_only=True),
            part("tcp", "tcp_bench", "TCP"),
            Part("push", "tcp_bench", "part_push", [max(n, 20000)], {"push": "BENCHRESULT.rate"}),
        ], _call_rows("tcp", "raw", raw_tcp, (1.2, 1.5, 0.8)) + _call_rows(
            "raw_client", "raw", raw_tcp, what="raw server through the tcp kind's client:",
            note="the client's share") + [
            Row("push_many, batches of 1,000", "push:push", "", "", abs_target=50000.0)]),
        Suite("http", "http_bench.py", (), [
            part("raw", "http_bench", "raw"),
            part("raw_thread", "http_bench", "raw_thread", full_only=True),
            part("http", "http_bench", "HTTP"),
        ], _call_rows("http", "raw", raw_http, (1.2, None, 0.8)) + _call_rows(
            "http", "raw_thread", "raw uvicorn app running the function in a thread",
            note="the same thread hop as funboost's")),
        Suite("grpc", "grpc_bench.py", (), [
            part("raw", "grpc_bench", "raw"),
            part("grpc", "grpc_bench", "funboost"),
        ], _call_rows("grpc", "raw", "raw grpcio unary call, same JSON work", note="context")),
    ]


# ---------------------------------------------------------------- parts that need the original's python
def orig_core_part(kind: str, n: int, threads: int, want_e2e: int) -> Optional[dict]:
    """core_bench's original-funboost part, run through _common.run_original in the orig venv."""
    import core_bench
    from _common import run_original
    res = run_original(core_bench.ORIG_SOURCE, kind, n, threads, want_e2e, python=os.environ["FUNBOOST_ORIG_PYTHON"])
    if res is not None:
        res["rss"] = res.pop("rss_mb", None)  # the original's process, not this one
    return res


PIPELINED_OPTIONS = {"redis_ack_able": {"url": REDIS_URL}, "rabbitmq": {"url": AMQP_URL},
                     "kafka": {"bootstrap_servers": KAFKA, "num_partitions": 3}}


def pipelined_push_part(kind: str, n: int, options_json: str = "{}") -> Optional[dict]:
    """``push`` one by one with ``BoosterParams(publish_mode="pipelined")`` (issue 24 item 3), timed until
    ``flush()`` returned, i.e. until the broker holds every message. None while this checkout has no
    ``publish_mode`` (the row then shows a dash)."""
    import time as _t
    import uuid as _uuid
    from funboost import BoosterParams, boost
    if "publish_mode" not in BoosterParams.model_fields:
        return None
    f = boost(BoosterParams(queue_name=f"bench_pipe_{_uuid.uuid4().hex[:8]}", broker_kind=kind,
                            broker_exclusive_config={**PIPELINED_OPTIONS[kind], **json.loads(options_json)},
                            publish_mode="pipelined",
                            state_backend="memory", log_to_console=False))(lambda x: None)
    f.push(-1)
    flush = getattr(f, "flush", None) or f.broker.flush
    flush()
    t = _t.perf_counter()
    for i in range(n):
        f.push(i)
    flush()
    rate = n / (_t.perf_counter() - t)
    try:
        f.clear()
        if hasattr(f.broker, "delete_queues"):
            f.broker.delete_queues()
    except Exception:
        pass
    return {"rate": rate}


def orig_rabbitmq_part(n: int) -> dict:
    import rabbitmq_bench
    return rabbitmq_bench.original(n, os.environ["FUNBOOST_ORIG_PYTHON"])


# ---------------------------------------------------------------- running parts
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_output(stdout: str) -> dict[str, dict]:
    """Every tagged result line of a part's output, by tag (the last line of each tag wins). The original
    funboost colours and prefixes what it prints: escape codes are dropped, text after the JSON ignored."""
    out: dict[str, dict] = {}
    dec = json.JSONDecoder()
    for line in stdout.splitlines():
        line = ANSI_RE.sub("", line)
        m = RESULT_RE.search(line)
        if not m:
            continue
        try:
            out[m.group(1)] = dec.raw_decode(line, m.start(2))[0]
        except json.JSONDecodeError:
            continue
    return out


def pick(parsed: dict[str, dict], where: str, own_rss: bool = True) -> tuple[Optional[float], Optional[float]]:
    """(figure, peak RSS MB) at ``TAG.key``. RSS: the script's own ``rss`` on the same line, else (when the
    part measures in its own process, ``own_rss``) the peak RSS of the process that ran the part."""
    tag, key = where.split(".", 1)
    d = parsed.get(tag) or {}
    v = d.get(key)
    rss = d.get("rss")
    if rss is None and own_rss:
        rss = d.get("rss_mb", (parsed.get("CALLRSS") or {}).get("rss_mb"))
    return (float(v) if isinstance(v, (int, float)) else None), (float(rss) if rss is not None else None)


def run_call(part: Part, pythons: dict[str, str], log: Callable[[str], None]) -> dict[str, tuple]:
    """Run one part in a fresh process, in a scratch directory; {figure: (value, rss)}."""
    with tempfile.TemporaryDirectory(prefix="funboost-runall-") as d:
        env = scratch_env(d, PYTHONPATH=d, FUNBOOST_ORIG_PYTHON=pythons.get("orig", ""),
                          FUNBOOST_ORIG_KAFKA_PYTHON=pythons.get("orig", ""))
        cmd = [pythons[part.venv], os.path.join(BENCH_DIR, "_call.py"), part.module, part.func,
               json.dumps(list(part.args))]
        try:
            p = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=part.timeout)
            stdout, stderr, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr, rc = f"timed out after {part.timeout}s", -1
    parsed = parse_output(stdout)
    res = {name: pick(parsed, where, part.own_rss) for name, where in part.figures.items()}
    if all(v is None for v, _ in res.values()):
        log(f"    ! {part.module}.{part.func}{tuple(part.args)} gave no figures (rc={rc}): "
            f"{(stderr or stdout).strip()[-600:]}")
    return res


def run_suite(suite: Suite, rounds: int, pythons: dict[str, str], log: Callable[[str], None]) -> dict[str, list]:
    """{``side:figure``: [(value, rss) per round]} with the side order reversed every other round."""
    samples: dict[str, list] = {}
    for r in range(rounds):
        order = suite.parts if r % 2 == 0 else list(reversed(suite.parts))
        t = time.perf_counter()
        for part in order:
            if part.venv not in pythons or (part.side.startswith("orig") and "orig" not in pythons):
                continue
            for name, val in run_call(part, pythons, log).items():
                samples.setdefault(f"{part.side}:{name}", [None] * rounds)[r] = val
        log(f"  {suite.name}: round {r + 1}/{rounds} done in {time.perf_counter() - t:.0f} s")
    return samples


# ---------------------------------------------------------------- figures (pure functions)
@dataclass
class Stat:
    median: Optional[float]
    spread_pct: Optional[float]  # half the range over the rounds, % of the median
    n: int
    rss: Optional[float] = None  # highest peak RSS seen, MB


def stat(values: Iterable[Optional[float]], rss: Iterable[Optional[float]] = ()) -> Stat:
    vs = [float(v) for v in values if v is not None]
    rs = [float(x) for x in rss if x is not None]
    if not vs:
        return Stat(None, None, 0, max(rs) if rs else None)
    med = statistics.median(vs)
    spread = (max(vs) - min(vs)) / 2 / med * 100 if med and len(vs) > 1 else 0.0
    return Stat(med, spread, len(vs), max(rs) if rs else None)


@dataclass
class RowResult:
    suite: str
    label: str
    anchor_label: str
    ours: Stat
    anchor: Stat
    ratio: Optional[float]
    ratio_lo: Optional[float]
    ratio_hi: Optional[float]
    target: Optional[float]
    note: str = ""
    skipped: str = ""
    unit: str = "msg/s"
    lower_is_better: bool = False
    abs_target: Optional[float] = None

    @property
    def verdict(self) -> str:
        if self.abs_target is not None:
            if self.ours.median is None:
                return "not measured"
            ok = (self.ours.median <= self.abs_target) if self.lower_is_better else self.ours.median >= self.abs_target
            return "met" if ok else "NOT met"
        if self.target is None:
            return ""
        if self.ratio is None:
            return "not measured"
        ok = self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target
        return "met" if ok else "NOT met"


def aggregate(suite_name: str, rows: Sequence[Row], samples: dict[str, list], skipped: str = "") -> list[RowResult]:
    """Medians and spreads per figure, and per row the median of the per-round ratios."""
    out = []
    for row in rows:
        a = samples.get(row.ours, [])
        b = samples.get(row.anchor, []) if row.anchor else []
        ratios = [x[0] / y[0] for x, y in zip(a, b) if x and y and x[0] is not None and y[0]]
        out.append(RowResult(
            suite_name, row.label, row.anchor_label,
            stat([x[0] for x in a if x], [x[1] for x in a if x]),
            stat([y[0] for y in b if y], [y[1] for y in b if y]),
            statistics.median(ratios) if ratios else None, min(ratios) if ratios else None,
            max(ratios) if ratios else None, row.target, row.note, skipped, row.unit, row.lower_is_better,
            row.abs_target))
    return out


def fmt_number(v: float) -> str:
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 0.1 else 3
    return f"{v:,.{digits}f}"


def fmt_value(s: Stat, unit: str = "msg/s") -> str:
    """The median with its spread; the unit is written out when it is not msg/s (the table's default)."""
    if s.median is None:
        return "–"
    text = fmt_number(s.median) + ("" if unit == "msg/s" else f" {unit}")
    if s.n < 2:
        return text
    return f"{text} ±{s.spread_pct:.0f} %"


def fmt_rss(s: Stat) -> str:
    return "–" if s.rss is None else f"{s.rss:.0f}"


def fmt_ratio(r: RowResult) -> str:
    if r.ratio is None:
        return "–"
    if r.ratio_lo is None or r.ratio_hi is None or r.ratio_lo == r.ratio_hi:
        return f"{r.ratio:.2f}×"
    return f"{r.ratio:.2f}× ({r.ratio_lo:.2f}–{r.ratio_hi:.2f})"


def fmt_target(r: RowResult) -> str:
    if r.skipped:
        return "skipped"
    sign = "≤" if r.lower_is_better else "≥"
    if r.abs_target is not None:
        return f"{sign} {fmt_number(r.abs_target)} {r.unit}: {r.verdict}" + (f"; {r.note}" if r.note else "")
    if r.target is None:
        return r.note
    return f"{sign} {r.target:g}×: {r.verdict}" + (f"; {r.note}" if r.note else "")


HEADER = ("suite", "funboost figure", "figure", "RSS MB", "anchor", "figure", "RSS MB", "ratio (rounds' range)",
          "target")


def format_markdown(results: Sequence[RowResult], meta: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md (between the markers), with how it was produced."""
    lines = [f"Generated by `{meta.get('command', 'python bench/run_all.py')}` on {meta.get('date', '?')}: "
             f"{meta.get('rounds', '?')} alternating rounds, N = {meta.get('n', '?')}; "
             f"{meta.get('machine', '')}.",
             "Figures are medians over the rounds, ± half the range seen (as % of the median), in msg/s unless "
             "a unit is written; the ratio is the median of the per-round ratios (funboost / anchor), with the "
             "lowest and highest round in brackets: for latencies (ms) lower is better, and the target is a "
             "ceiling (≤). Peak RSS is that of the whole part's process. The machine is shared and noisy: "
             "trust ratios more than rates.",
             "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---", "---", "---:", "---:", "---", "---:", "---:", "---:", "---"]) + "|"]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.suite} | {r.label} | – | – | {r.anchor_label} | – | – | – | skipped: {r.skipped} |")
            continue
        lines.append(f"| {r.suite} | {r.label} | {fmt_value(r.ours, r.unit)} | {fmt_rss(r.ours)} | "
                     f"{r.anchor_label or '–'} | {fmt_value(r.anchor, r.unit)} | {fmt_rss(r.anchor)} | {fmt_ratio(r)} | "
                     f"{fmt_target(r)} |")
    return "\n".join(lines)


def format_terminal(results: Sequence[RowResult]) -> str:
    rows = [HEADER] + [(r.suite, r.label, fmt_value(r.ours, r.unit), fmt_rss(r.ours), r.anchor_label or "–",
                        fmt_value(r.anchor, r.unit), fmt_rss(r.anchor), fmt_ratio(r), fmt_target(r)) for r in results]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def replace_region(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with what lies between the markers replaced by ``block`` (markers kept); the markers are
    appended at the end when missing."""
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i:
        return text.rstrip("\n") + f"\n\n{begin}\n{block.strip()}\n{end}\n"
    return text[:i + len(begin)] + "\n" + block.strip() + "\n" + text[j:]


# ---------------------------------------------------------------- driver
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 5 minutes: N=3000, 2 rounds, fewer rows")
    ap.add_argument("--n", type=int, help="messages per figure (default 20000; quick 3000)")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 5; quick 2: the order of the sides still flips once)")
    ap.add_argument("--suites", help="comma-separated subset (default: all): " + ", ".join(
        [s.name for s in build_suites(1000, False)] + ["scale"]))
    ap.add_argument("--no-scale", action="store_true", help="do not run scale_bench.py (backlog, processes, memory)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--no-orig", action="store_true", help="skip the original funboost 55.0 sides")
    ap.add_argument("--setup-only", action="store_true", help="only create / check the virtualenvs")
    ap.add_argument("--python", default=sys.executable, help="base interpreter of the virtualenvs")
    a = ap.parse_args(argv)
    n = a.n or (3000 if a.quick else 20000)
    rounds = a.rounds or (2 if a.quick else 5)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    suites = build_suites(n, a.quick)
    run_scale = not a.no_scale
    if a.suites:
        wanted = set(a.suites.split(","))
        run_scale = run_scale and "scale" in wanted
        wanted.discard("scale")
        unknown = wanted - {s.name for s in suites}
        if unknown:
            print(f"unknown suite(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        suites = [s for s in suites if s.name in wanted]
    needed = {"ours"} | ({"orig"} if not a.no_orig else set())
    pythons = {name: ensure_venv(name, a.python, log) for name in sorted(needed)}
    if a.setup_only:
        for k, v in pythons.items():
            log(f"{k}: {v}")
        return 0

    start_info = machine_info()
    log(f"run_all: N={n}, {rounds} alternating rounds; machine: {start_info}")
    results: list[RowResult] = []
    raw: dict[str, Any] = {}
    for suite in suites:
        problem = next((p for p in map(service_problem, suite.needs) if p), None)
        if problem:
            log(f"- {suite.name}: skipped ({problem})")
            results += aggregate(suite.name, suite.rows, {}, skipped=problem)
            continue
        log(f"- {suite.name} ({suite.script}) ...")
        samples = run_suite(suite, rounds, pythons, log)
        raw[suite.name] = samples
        rows = [r for r in suite.rows if not (a.no_orig and "orig" in r.anchor)]
        results += aggregate(suite.name, rows, samples)

    took = time.perf_counter() - t_start
    meta = {"command": "python bench/run_all.py" + (" --quick" if a.quick else "") +
            (f" --suites {a.suites}" if a.suites else "") + (f" --n {a.n}" if a.n else "") +
            (f" --rounds {a.rounds}" if a.rounds else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": rounds, "n": n, "seconds": round(took),
            "machine": f"{start_info} at the start, {machine_info().rsplit('load avg', 1)[-1].strip()} at the end"
                       f" ({took / 60:.0f} minutes)"}
    print()
    print(format_terminal(results))
    print(f"\n({took / 60:.1f} minutes)")
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(BENCH_DIR, "results", f"run_all-{stamp}.json"), "w") as fh:
        json.dump({"meta": meta, "samples": raw}, fh, indent=1)
    if not a.no_docs:
        with open(DOC) as fh:
            text = fh.read()
        with open(DOC, "w") as fh:
            fh.write(replace_region(text, format_markdown(results, meta)))
        log(f"rewrote the table in {os.path.relpath(DOC, ROOT)}")
    if run_scale:
        log("\n- scale_bench.py (backlog, consumer processes, memory) ...")
        rc = subprocess.run([pythons["ours"], os.path.join(BENCH_DIR, "scale_bench.py")] +
                            (["--quick"] if a.quick else []) + (["--no-docs"] if a.no_docs else [])).returncode
        if rc:
            log(f"scale_bench.py exited with status {rc}")
        log(f"(all done in {(time.perf_counter() - t_start) / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
