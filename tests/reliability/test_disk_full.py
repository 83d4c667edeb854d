"""Disk trouble for sqlite (issue 19, item 6): the queue's file on a small tmpfs that the test mounts and
fills. Publishing on the full disk must raise a clear error (not hang, not report success); the file
must stay intact (``PRAGMA integrity_check``) with every task whose publish returned still in it; once the
tmpfs grows again, publishing and consuming work and every acknowledged task runs.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest

from funboost.plugins.broker import OutgoingMessage
from funboost.testing import require_service, wait_until
from funboost.testing.workers import ConsumerProcess, recording_publisher

from .report import record
from .sizes import SIZE

PAYLOAD = "x" * 2000  # a task argument that fills pages fast


def _message(i: int) -> OutgoingMessage:
    """``task(i)`` as the engine publishes it, with a 2 KB ``extra`` field that fills pages fast."""
    tid = f"disk-{i}"
    return OutgoingMessage(body=json.dumps({"i": i, "extra": {"task_id": tid, "pad": PAYLOAD}}), task_id=tid)


def _stored_ids(db_file: str) -> set[int]:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    try:
        return {json.loads(body)["i"] for (body,) in conn.execute("SELECT body FROM messages")}
    finally:
        conn.close()


def _integrity(db_file: str) -> str:
    conn = sqlite3.connect(db_file, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def mount_tmpfs(path: str, size: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        require_service(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")


def remount(path: str, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path):
    path = str(tmp_path / "fs")
    os.mkdir(path)
    mount_tmpfs(path, SIZE.disk_full_fs)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def test_sqlite_on_a_full_disk(small_fs, qname, tmp_path):
    options = {"db_dir": small_fs, "heartbeat_interval": 0.3, "heartbeat_timeout": 1.5, "reclaim_interval": 0.3}
    pub = recording_publisher("sqlite", qname, options)
    published: list[int] = []
    error = None
    started = time.monotonic()
    i = 0
    while error is None:
        assert time.monotonic() - started < 120, "the disk never filled up"
        try:
            pub.broker.publish([_message(i)])
            published.append(i)
        except Exception as exc:  # noqa: BLE001 - the error is what the test checks
            error = exc
        i += 1
    fill_seconds = time.monotonic() - started
    # the failed publish raised a clear error...
    from funboost_sqlite import QueueStorageFull

    text = f"{type(error).__name__}: {error}"
    assert isinstance(error, QueueStorageFull), f"unclear error on a full disk: {text}"
    assert small_fs in str(error) and "nothing of this publish was stored" in str(error), text
    # ...and keeps raising while the disk is full (no silent success)
    with pytest.raises(Exception) as again:
        pub.broker.publish([_message(10**9)])
    db_files = [os.path.join(small_fs, f) for f in os.listdir(small_fs) if f.endswith(".sqlite3")]
    assert db_files, f"no database file in {os.listdir(small_fs)}"
    # nothing stored is lost or corrupted: read-only checks work on the full disk
    stored = _stored_ids(db_files[0])
    assert set(published) <= stored, f"acknowledged publishes missing from the file: {sorted(set(published) - stored)[:20]}"
    assert stored <= set(published) | {i - 1}, "the file holds a task whose publish raised (other than the last)"
    pub.broker.close()
    # space returns: the same file takes new tasks, and a consumer runs everything
    remount(small_fs, SIZE.disk_full_grow)
    recovered_at = time.monotonic()
    more = list(range(10**6, 10**6 + 50))
    pub = recording_publisher("sqlite", qname, options)
    pub.broker.publish([_message(j) for j in more])
    consumer = ConsumerProcess("sqlite", qname, options, str(tmp_path / "consumer.out"), concurrency=8,
                               task_seconds=0.0)
    try:
        expected = set(published) | set(more)
        wait_until(lambda: set(consumer.runs()) >= expected, 120, 0.1, f"all {len(expected)} tasks run")
        drained = time.monotonic() - recovered_at
        runs = consumer.runs()
    finally:
        consumer.stop()
        pub.broker.close()
    integrity = _integrity(db_files[0])
    assert integrity == "ok", integrity
    duplicates = sum(1 for c in runs.values() if c > 1)
    print(f"\nsqlite on a {SIZE.disk_full_fs} tmpfs: {len(published)} tasks stored before the disk filled "
          f"({fill_seconds:.1f}s), publish then raised {text[:160]!r} (again: {type(again.value).__name__}); "
          f"integrity ok; after growing to {SIZE.disk_full_grow}: {len(expected)} tasks run in {drained:.1f}s, "
          f"duplicates {duplicates}")
    record("disk_full", kind="sqlite", fs=SIZE.disk_full_fs, stored_before_full=len(published), lost=0,
           duplicates=duplicates, error=text[:200], drain_seconds=round(drained, 1))
