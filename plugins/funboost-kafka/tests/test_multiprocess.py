"""3 partitions, 2 consumer processes, one SIGKILLed mid-run: every task runs at least once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from test_broker import msgs, wait_for

WORKER = os.path.join(os.path.dirname(__file__), "kafka_worker.py")


def read_ids(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip() and not line.startswith("ASSIGNED")]


def assignments(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split()[1] if len(line.split()) > 1 else "" for line in f if line.startswith("ASSIGNED")]


def test_sigkill_one_of_two_members(brokers, queue_name, tmp_path):
    n = 600
    pub = brokers(queue_name)
    pub.publish(msgs(200, prefix="a"))
    out_a, out_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # slow tasks (up to 40 ms, 8 threads) so the victim has work in flight when it dies
    args = ["--slow-ms", "40", "--run-seconds", "90"]
    pa = subprocess.Popen([sys.executable, WORKER, queue_name, out_a, *args], env=env)
    pb = subprocess.Popen([sys.executable, WORKER, queue_name, out_b, *args], env=env)
    try:
        # both members hold partitions and both are working
        def both_assigned() -> bool:
            last_a, last_b = assignments(out_a)[-1:], assignments(out_b)[-1:]
            return all(last and last[0] not in ("", "0,1,2") for last in (last_a, last_b))

        wait_for(both_assigned, deadline_s=30, what="both members hold partitions")
        pub.publish(msgs(n - 200, prefix="b"))
        wait_for(lambda: len(read_ids(out_b)) >= 40 and len(read_ids(out_a)) >= 40, deadline_s=30,
                 what="both members processing")
        os.kill(pb.pid, signal.SIGKILL)
        pb.wait(10)
        expected = {f"a{i}" for i in range(200)} | {f"b{i}" for i in range(n - 200)}
        wait_for(lambda: expected <= set(read_ids(out_a)) | set(read_ids(out_b)), deadline_s=40,
                 what="every task id ran at least once after the kill")
        assert assignments(out_a)[-1] == "0,1,2", "the survivor took over every partition"
        wait_for(lambda: pub.queue_size().ready == 0, deadline_s=15, what="lag 0 after the survivor")
        ran = read_ids(out_a) + read_ids(out_b)
        assert set(ran) == expected  # nothing foreign; duplicates allowed (at-least-once)
    finally:
        open(out_a + ".stop", "w").close()
        for p in (pa, pb):
            if p.poll() is None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def _start_member(queue_name: str, out: str) -> subprocess.Popen:
    """A consumer process of the queue's group; returns once it holds partitions."""
    p = subprocess.Popen([sys.executable, WORKER, queue_name, out, "--run-seconds", "120"],
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_for(lambda: any(a not in ("", None) for a in assignments(out)), 60, "the member holds partitions")
    except BaseException:
        p.kill()
        raise
    return p


def test_purge_while_a_member_in_another_process_lives_fails_clearly(brokers, queue_name, tmp_path):
    """Kafka takes the admin commit of a group's offsets only while the group has no member: purge from
    a process that is not one says so (the live member keeps consuming meanwhile)."""
    pub = brokers(queue_name)
    pub.publish(msgs(1, prefix="warm"))
    out = str(tmp_path / "alive.log")
    member = _start_member(queue_name, out)
    try:
        pub.publish(msgs(3))
        with pytest.raises(RuntimeError, match="active members in other processes"):
            pub.purge()
        assert member.poll() is None
    finally:
        open(out + ".stop", "w").close()
        try:
            member.wait(30)
        except subprocess.TimeoutExpired:
            member.kill()
