"""A throwaway OpenSSH server for tests (remote deployment): loopback only, a random free port, generated
host and client keys, its own sshd_config (key authentication only). Debian: ``apt-get install
openssh-server``; the system service is never used."""
from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class TestSshd(NamedTuple):
    port: int
    user: str
    key_filename: str  # the client's private key (authorized on this server)
    known_hosts: str  # a known_hosts file holding this server's host key
    empty_known_hosts: str  # one that does not


def unavailable_reason() -> Optional[str]:
    """None when an sshd can be started here, else why not."""
    if not os.path.exists(SSHD):
        return "OpenSSH server not installed (Debian: apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed (Debian: apt-get install openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@contextlib.contextmanager
def loopback_sshd(folder: Path, start_timeout: float = 15.0) -> Iterator[TestSshd]:
    """Start sshd with its files in ``folder``; stop it on exit. Raises RuntimeError if it does not start."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True,
                       timeout=60)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    port, user = _free_port(), getpass.getuser()
    (folder / "sshd_config").write_text(textwrap.dedent(f"""
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {folder / 'host_key'}
        PidFile {folder / 'sshd.pid'}
        AuthorizedKeysFile {folder / 'authorized_keys'}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        UsePAM no
        StrictModes no
        AllowUsers {user}
        Subsystem sftp internal-sftp
    """))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while not _greets(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace")[-500:] if proc.poll() is not None and proc.stdout else ""
                raise RuntimeError(f"sshd did not start on 127.0.0.1:{port}: {out}")
            time.sleep(0.05)
        kind, key = (folder / "host_key.pub").read_text().split()[:2]
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
        (folder / "empty_known_hosts").write_text("")
        yield TestSshd(port, user, str(folder / "client_key"), str(folder / "known_hosts"),
                       str(folder / "empty_known_hosts"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
