"""Failure tests: a consumer killed with SIGKILL, and the server closing every connection mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from funboost.plugins.broker import OutgoingMessage

from conftest import wait_until

HERE = Path(__file__).parent


def start_consumer(url: str, queue: str, out: Path, work_ms: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(HERE / "_consumer_proc.py"), url, queue, str(out), str(work_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def done_ids(*files: Path) -> set[int]:
    ids: set[int] = set()
    for f in files:
        if f.exists():
            ids.update(int(line) for line in f.read_text().split() if line.strip())
    return ids


def lines(f: Path) -> int:
    return len(f.read_text().split()) if f.exists() else 0


def publish_range(broker, start: int, stop: int) -> None:
    broker.publish([OutgoingMessage(body=json.dumps({"x": i})) for i in range(start, stop)])


def test_sigkill_one_of_two_consumers_loses_nothing(make_broker, queue_name, rabbitmq_url, tmp_path):
    n = 400
    producer = make_broker(queue_name)
    publish_range(producer, 0, n)
    fa, fb = tmp_path / "a.txt", tmp_path / "b.txt"
    a = start_consumer(rabbitmq_url, queue_name, fa, 20)
    b = start_consumer(rabbitmq_url, queue_name, fb, 20)
    try:
        wait_until(lambda: lines(fa) >= 30, 30, message="consumer A under way")
        os.kill(a.pid, signal.SIGKILL)
        a.wait(10)
        killed_at = done_ids(fa, fb)
        assert len(killed_at) < n, "the run ended before the kill: raise n or work_ms"
        wait_until(lambda: done_ids(fa, fb) == set(range(n)), 60, interval=0.1,
                   message="every message processed after the kill")
        wait_until(lambda: producer.queue_size().ready == 0, 10, message="queue drained")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_server_closes_all_connections_consumers_resume(make_broker, private_vhost, rabbitmqctl, tmp_path):
    queue = "chaos_close"
    producer = make_broker(queue, url=private_vhost, heartbeat=5, reconnect_max_delay=1.0)
    fa, fb = tmp_path / "a.txt", tmp_path / "b.txt"
    publish_range(producer, 0, 50)
    a = start_consumer(private_vhost, queue, fa, 5)
    b = start_consumer(private_vhost, queue, fb, 5)
    published = [50]
    stop = threading.Event()
    errors: list = []

    def keep_publishing() -> None:
        try:
            while not stop.is_set():
                publish_range(producer, published[0], published[0] + 20)
                published[0] += 20
                time.sleep(0.05)
        except Exception as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    t = threading.Thread(target=keep_publishing)
    t.start()
    vhost = private_vhost.rsplit("/", 1)[1]
    try:
        for _ in range(2):
            wait_until(lambda: len(done_ids(fa, fb)) >= 40, 30, message="consumers under way")
            before_a, before_b = lines(fa), lines(fb)
            r = subprocess.run([rabbitmqctl, "-q", "close_all_connections", "--vhost", vhost, "test"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            # consumers must come back on their own and go on consuming
            wait_until(lambda: lines(fa) >= before_a + 30 and lines(fb) >= before_b + 30, 30, interval=0.1,
                       message="both consumers resumed after close_all_connections")
        stop.set()
        t.join(60)
        assert not errors, errors
        total = published[0]
        wait_until(lambda: done_ids(fa, fb) == set(range(total)), 60, interval=0.1,
                   message=f"all {total} messages processed")
        assert a.poll() is None and b.poll() is None
    finally:
        stop.set()
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait(10)
