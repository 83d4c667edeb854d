"""``booster.fabric_deploy`` against a real OpenSSH server the test starts itself: loopback, a random port,
generated host and client keys, its own sshd_config (key authentication only). The deployed consumers run
tasks published here, and stop() drains them."""
from __future__ import annotations

import getpass
import importlib
import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from funboost.state.base import get_state_backend
from funboost.testing import require_service, wait_until

@pytest.fixture
def sshd(tmp_path):
    pytest.importorskip("paramiko", reason='fabric_deploy needs the deploy extra: pip install "funboost-core[deploy]"')
    from funboost.testing.sshd import loopback_sshd, unavailable_reason
    reason = unavailable_reason()
    if reason:
        require_service(reason)
    try:
        with loopback_sshd(tmp_path / "sshd") as server:
            yield {"port": server.port, "key": server.key_filename, "known_hosts": server.known_hosts,
                   "empty_known_hosts": server.empty_known_hosts}
    except RuntimeError as exc:
        require_service(str(exc))


def test_deploy_runs_the_consumers_on_the_remote_host_and_stop_drains_them(sshd, tmp_path, monkeypatch):
    queue = f"deploy_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "deploy_tasks.py").write_text(textwrap.dedent(f"""
        import os
        from funboost import boost, BoosterParams

        @boost(BoosterParams(queue_name="{queue}", broker_kind="sqlite", state_backend="sqlite",
                             is_using_rpc_mode=True, log_to_console=False))
        def where(x):
            return [x * 10, os.getpid()]
    """))
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("not uploaded")
    monkeypatch.syspath_prepend(str(project))
    where = importlib.import_module("pkg.deploy_tasks").where
    remote = tmp_path / "remote"
    env = {k: os.environ[k] for k in ("FUNBOOST_DATA_DIR", "FUNBOOST_SQLITE_DIR", "FUNBOOST_STATE_SQLITE_PATH")
           if k in os.environ}
    env.update(FUNBOOST_HEARTBEAT_INTERVAL="0.5", FUNBOOST_LOG_TO_CONSOLE="1")
    results = [where.push(i) for i in range(6)]  # waiting before the consumers exist

    dep = where.fabric_deploy("127.0.0.1", sshd["port"], getpass.getuser(), key_filename=sshd["key"],
                              known_hosts=sshd["known_hosts"], process_num=2, project_root=str(project),
                              remote_dir=str(remote), python_interpreter=sys.executable, env=env)
    try:
        assert (remote / "pkg" / "deploy_tasks.py").read_text() == (project / "pkg" / "deploy_tasks.py").read_text()
        assert not (remote / ".git").exists()
        got = [r.get(timeout=60) for r in results]
        assert [g[0] for g in got] == [0, 10, 20, 30, 40, 50]
        state = get_state_backend("sqlite")
        wait_until(lambda: len({c["pid"] for c in state.live_consumers(queue)}) == 2, 30, message="2 consumers")
        pids = {c["pid"] for c in state.live_consumers(queue)}
        assert os.getpid() not in pids and dep.pid not in pids  # the deployed children consume
        assert dep.is_running()
    finally:
        stopped = dep.stop(timeout=60)
    assert stopped, dep.read_log()[-3000:]
    assert not dep.is_running()
    wait_until(lambda: not get_state_backend("sqlite").live_consumers(queue), 20, message="consumers gone")
    assert "stopped consuming" in dep.read_log()  # the graceful-shutdown summary of a child


def test_an_unknown_host_key_is_refused(sshd, tmp_path):
    from funboost import BoosterParams, boost
    from funboost.deploy import DeployError

    @boost(BoosterParams(queue_name=f"deploy_refused_{uuid.uuid4().hex[:8]}", broker_kind="memory",
                         log_to_console=False))
    def f(x):
        return x

    with pytest.raises(DeployError, match="host key"):
        f.fabric_deploy("127.0.0.1", sshd["port"], getpass.getuser(), key_filename=sshd["key"],
                        known_hosts=sshd["empty_known_hosts"], project_root=str(tmp_path))


def test_a_handshake_broken_in_transit_is_retried_and_a_refused_key_is_not(sshd, tmp_path, caplog):
    """A relay in front of the sshd garbles the first connection after the server's greeting (what a bad link
    or a throttling sshd does to a handshake: paramiko reports "Invalid packet blocking" and the like); the
    deploy connection tries again and gets through. A refused host key is final at once."""
    import logging
    import socket
    import threading

    from funboost.deploy import DeployError, _connect
    from funboost.testing.relay import forward, pump

    relay = socket.create_server(("127.0.0.1", 0))
    port = relay.getsockname()[1]
    seen: list[int] = []  # one entry per connection made through the relay
    garble = [True]  # the first one only

    def serve() -> None:
        while True:
            try:
                conn, _ = relay.accept()
            except OSError:
                return
            seen.append(1)
            if garble:  # a greeting, then bytes that are no SSH packet; closed once the client gives up
                garble.clear()
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(range(256)) * 8)
                threading.Thread(target=pump, args=(conn, conn), daemon=True).start()
                continue
            forward(conn, ("127.0.0.1", sshd["port"]))

    threading.Thread(target=serve, daemon=True).start()
    key_line = Path(sshd["known_hosts"]).read_text().split(" ", 1)[1]
    known = tmp_path / "relay_known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key_line}")
    kwargs = {"hostname": "127.0.0.1", "port": port, "username": getpass.getuser(), "key_filename": sshd["key"],
              "timeout": 10, "allow_agent": False, "look_for_keys": False}
    try:
        with caplog.at_level(logging.WARNING, logger="funboost.deploy"):
            client = _connect(kwargs, str(known), False)
        try:
            _, out, _ = client.exec_command("echo through")
            assert out.read().strip() == b"through"
        finally:
            client.close()
        assert len(seen) == 2 and "connecting again (attempt 2 of 3)" in caplog.text

        seen.clear()
        with pytest.raises(DeployError, match="unknown host key is refused"):
            _connect(kwargs, sshd["empty_known_hosts"], False)
        assert len(seen) == 1  # not retried
    finally:
        relay.close()
