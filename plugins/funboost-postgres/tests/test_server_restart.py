"""A server restart on the test's OWN PostgreSQL instance (initdb + pg_ctl on another port, in a temporary
directory, run as the ``postgres`` system user when we are root): consumers resume within 5 s and nothing
published before the crash is lost. Skipped when no PostgreSQL server binaries are installed."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.testing.workers import ConsumerProcess, stop_all

from conftest import wait_for

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    def __init__(self):
        if not BIN or not os.path.exists(os.path.join(BIN[-1], "initdb")):
            pytest.skip("no PostgreSQL server binaries (initdb/pg_ctl) installed")
        self.bin = BIN[-1]
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="fb_pg_")
        self.data = os.path.join(self.dir, "data")
        self.prefix = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            user = "postgres"
            try:
                import pwd
                pwd.getpwnam(user)
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run a private server")
            shutil.chown(self.dir, user)
            self.prefix = ["runuser", "-u", user, "--"]
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool, *args):
        subprocess.run(self.prefix + [os.path.join(self.bin, tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on", "start")

    def crash(self):
        """Immediate shutdown: like a crash, every session cut, recovery from the WAL on the next start."""
        self._run("pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")

    def destroy(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_server():
    srv = PrivateServer()
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()


def test_consumer_resumes_within_5s_after_a_server_crash(private_server, tmp_path, queue_name, monkeypatch):
    from funboost_postgres import PostgresBroker

    monkeypatch.setenv("FUNBOOST_POSTGRES_DSN", private_server.dsn)
    monkeypatch.setenv("FUNBOOST_POSTGRES_SCHEMA", "funboost")
    pub = PostgresBroker(queue_name)
    out = str(tmp_path / "w.out")
    proc = None
    try:
        proc = ConsumerProcess("POSTGRES", queue_name, {}, out, concurrency=8, task_seconds=0.02)
        def body(i):
            return OutgoingMessage(body=f'{{"i": {i}, "extra": {{"task_id": "t{i}"}}}}', task_id=f"t{i}")
        pub.publish([body(i) for i in range(1000)])
        wait_for(lambda: len(proc.runs()) >= 100, timeout=60, what="consumer running")
        private_server.crash()
        private_server.start()
        up = time.monotonic()
        runs_at_restart = proc.done()  # +40 below: more than the 8 tasks running at the crash
        wait_for(lambda: proc.done() > runs_at_restart + 40, timeout=30, what="tasks run after the restart")
        resumed = time.monotonic() - up
        print(f"resumed {resumed:.2f}s after the restart ({runs_at_restart} runs before it)")
        assert runs_at_restart < 1000, "the crash came too late to interrupt anything"
        assert resumed < 5.0, f"consumer resumed {resumed:.1f}s after the server was up"
        pub.publish([body(5000)])  # the publisher reconnects by itself
        wait_for(lambda: pub.queue_size().total == 0, timeout=60, what="queue drained after the restart")
        assert set(proc.runs()) == set(range(1000)) | {5000}
    finally:
        stop_all([proc])
        pub.close()
