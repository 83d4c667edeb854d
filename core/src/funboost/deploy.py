"""Remote deployment over SSH (the original's ``f.fabric_deploy``): upload the project to a host and start
``multi_process_consume(N)`` for one booster there, with a handle to stop it.

Needs paramiko: ``pip install "funboost-core[deploy]"``. Security: the host key is verified against
``known_hosts`` (default ``~/.ssh/known_hosts``); an unknown host is refused unless
``trust_unknown_host=True``. Passwords and keys are only handed to paramiko, never logged.

On the remote host the command runs as ``cd REMOTE_DIR && PYTHONPATH=REMOTE_DIR python3 -m
funboost.deploy run MODULE QUEUE N``; funboost (this project) must be installed for that interpreter. Its
output goes to ``REMOTE_DIR/funboost_deploy_<queue>.log`` and its pid to ``.pid`` next to it; the process
runs detached (``setsid``), so it survives the SSH session. :meth:`RemoteDeployment.stop` sends SIGTERM:
the consumers drain gracefully (funboost.keepalive), as with a local Ctrl-C.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import re
import shlex
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from funboost.booster import Booster

logger = logging.getLogger("funboost.deploy")

DEFAULT_EXCLUDED_PATTERNS = ("/.git/", "/.idea/", "/.vscode/", "/dist/", "/build/", "/__pycache__/", "/.venv/",
                             "/venv/", "/.tox/", "/node_modules/", "/.mypy_cache/", "/.pytest_cache/")
DEFAULT_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".log", ".gz", ".sqlite3", ".sqlite3-wal", ".sqlite3-shm")


class DeployError(RuntimeError):
    """The deployment could not be done (connection, authentication, host key, upload, start)."""


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError as exc:
        raise DeployError('fabric_deploy needs paramiko: pip install "funboost-core[deploy]"') from exc
    return paramiko


def module_of(booster: "Booster", project_root: Path) -> str:
    """The importable module of the booster's function, relative to ``project_root``."""
    module = getattr(booster.func, "__module__", None) or booster.__module__
    main = sys.modules.get("__main__")
    if module == "__main__":
        spec = getattr(main, "__spec__", None)
        if spec is not None:
            return spec.name
        path = Path(getattr(main, "__file__", "")).resolve()
        try:
            rel = path.relative_to(project_root.resolve()).with_suffix("")
        except ValueError:
            raise DeployError(f"{path} is not inside the project root {project_root}: pass project_root=") from None
        return ".".join(rel.parts)
    return module


def project_files(root: Path, excluded_patterns: Sequence[str] = DEFAULT_EXCLUDED_PATTERNS,
                  excluded_suffixes: Sequence[str] = DEFAULT_EXCLUDED_SUFFIXES,
                  max_age_seconds: Optional[float] = None, max_file_size: Optional[int] = None) -> Iterator[Path]:
    """Files of the project to upload (paths relative to ``root``). A pattern matches the '/'-separated
    path with slashes around it (``/.git/``), or as a glob (``*.csv``)."""
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not _excluded(f"/{(rel_dir / d).as_posix()}/", excluded_patterns)]
        for name in filenames:
            rel = rel_dir / name
            key = f"/{rel.as_posix()}"
            if name.endswith(tuple(excluded_suffixes)) or _excluded(key, excluded_patterns):
                continue
            st = (root / rel).stat()
            if max_file_size is not None and st.st_size > max_file_size:
                continue
            if max_age_seconds is not None and now - st.st_mtime > max_age_seconds:
                continue
            yield rel


def _excluded(path: str, patterns: Iterable[str]) -> bool:
    return any((p in path) if "/" in p else fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns)


class RemoteDeployment:
    """A deployed consumer on a remote host: :meth:`stop`, :meth:`is_running`, :meth:`read_log`."""

    def __init__(self, connect_kwargs: dict, known_hosts: Optional[str], trust_unknown_host: bool, remote_dir: str,
                 queue_name: str, pid: int) -> None:
        self._connect_kwargs = connect_kwargs
        self._known_hosts = known_hosts
        self._trust = trust_unknown_host
        self.remote_dir = remote_dir
        self.queue_name = queue_name
        self.pid = pid
        self.log_path = posixpath.join(remote_dir, f"funboost_deploy_{_safe(queue_name)}.log")
        self.host = connect_kwargs["hostname"]

    def __repr__(self) -> str:
        return f"<RemoteDeployment {self.queue_name!r} on {self.host} pid {self.pid}>"

    def _run(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        client = _connect(self._connect_kwargs, self._known_hosts, self._trust)
        try:
            return _exec(client, command, timeout)
        finally:
            client.close()

    def is_running(self) -> bool:
        code, _, _ = self._run(f"kill -0 {self.pid}")
        return code == 0

    def read_log(self) -> str:
        return self._run(f"cat {shlex.quote(self.log_path)}")[1]

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM to the deployed process group (graceful drain), SIGKILL after ``timeout``. True if it
        ended within the timeout."""
        script = (f"kill -TERM -- -{self.pid} 2>/dev/null || kill -TERM {self.pid} 2>/dev/null; "
                  f"for i in $(seq 1 {int(timeout * 10)}); do kill -0 {self.pid} 2>/dev/null || exit 0; sleep 0.1; done; "
                  f"kill -KILL -- -{self.pid} 2>/dev/null; exit 1")
        code, _, _ = self._run(script, timeout + 30)
        return code == 0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


#: attempts of an SSH connection whose handshake broke in transit (a dropped or garbled packet, an sshd that
#: throttles new connections); a refused host key, a failed login or a refused connection is not retried
CONNECT_ATTEMPTS = 3


class _UnknownHostKey(Exception):
    pass


class _RefuseUnknownHost:
    """paramiko's ``RejectPolicy`` with an error of its own, told apart from a transport error."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise _UnknownHostKey(f"the host key of {hostname} ({key.get_name()}) is not a known one")


def _connect(kwargs: dict, known_hosts: Optional[str], trust_unknown_host: bool) -> Any:
    paramiko = _paramiko()
    path = known_hosts if known_hosts is not None else os.path.expanduser("~/.ssh/known_hosts")
    where = f"SSH to {kwargs['hostname']}:{kwargs['port']}"
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        client = paramiko.SSHClient()
        if os.path.exists(path):
            client.load_host_keys(path)
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if trust_unknown_host else _RefuseUnknownHost())
        try:
            client.connect(**kwargs)
            return client
        except _UnknownHostKey as exc:
            client.close()
            raise DeployError(f"{where} refused: {exc} (an unknown host key is refused: add it to {path}, pass "
                              f"known_hosts=, or trust_unknown_host=True)") from None
        except (paramiko.AuthenticationException, paramiko.BadHostKeyException) as exc:
            client.close()
            raise DeployError(f"{where} failed: {exc}") from None
        except (paramiko.SSHException, EOFError) as exc:  # broke in transit: a new connection may get through
            client.close()
            if attempt == CONNECT_ATTEMPTS:
                raise DeployError(f"{where} failed ({attempt} attempts): {exc!r}") from None
            logger.warning("%s failed (%r); connecting again (attempt %d of %d)", where, exc, attempt + 1,
                           CONNECT_ATTEMPTS)
            time.sleep(0.5 * attempt)
        except OSError as exc:
            client.close()
            raise DeployError(f"{where} failed: {exc}") from None
    raise AssertionError("unreachable")  # the loop returns or raises


def _exec(client: Any, command: str, timeout: float) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode("utf-8", "replace")
    err = stderr.read().decode("utf-8", "replace")
    return stdout.channel.recv_exit_status(), out, err


def _sftp_makedirs(sftp: Any, path: str, known: set) -> None:
    if path in known or path in ("", "/"):
        return
    _sftp_makedirs(sftp, posixpath.dirname(path), known)
    try:
        sftp.stat(path)
    except FileNotFoundError:
        sftp.mkdir(path)
    known.add(path)


def fabric_deploy(booster: "Booster", host: str, port: int = 22, user: Optional[str] = None,
                  password: Optional[str] = None, *, key_filename: Optional[str] = None, process_num: int = 1,
                  project_root: Optional[str] = None, remote_dir: Optional[str] = None,
                  python_interpreter: str = "python3", env: Optional[Mapping[str, str]] = None,
                  path_pattern_exluded_tuple: Sequence[str] = DEFAULT_EXCLUDED_PATTERNS,
                  file_suffix_tuple_exluded: Sequence[str] = DEFAULT_EXCLUDED_SUFFIXES,
                  only_upload_within_the_last_modify_time: Optional[float] = None,
                  file_volume_limit: Optional[int] = 100 * 1000 * 1000, extra_shell_str: str = "",
                  known_hosts: Optional[str] = None, trust_unknown_host: bool = False,
                  timeout: float = 30.0, **_ignored: Any) -> RemoteDeployment:
    """Upload the project (``project_root``, default the current folder) to ``remote_dir`` on ``host``
    (default ``funboost_deploy/<project folder name>`` under the remote user's home) and start
    ``process_num`` consumer processes of ``booster`` there. ``env``: environment variables for the remote
    process (broker URLs ...); ``extra_shell_str``: shell run before it (e.g. ``source venv/bin/activate``).
    The original's keyword names are accepted (its spelling); ``invoke_runner_kwargs`` and
    ``sftp_log_level`` are ignored. Returns a :class:`RemoteDeployment`."""
    _paramiko()
    root = Path(project_root or os.getcwd()).resolve()
    module = module_of(booster, root)
    remote_dir = remote_dir or f"funboost_deploy/{_safe(root.name)}"
    connect_kwargs = {"hostname": host, "port": int(port), "username": user, "password": password,
                      "key_filename": key_filename, "timeout": timeout, "banner_timeout": timeout,
                      "auth_timeout": timeout, "look_for_keys": key_filename is None and password is None,
                      "allow_agent": key_filename is None and password is None}
    client = _connect(connect_kwargs, known_hosts, trust_unknown_host)
    try:
        if not posixpath.isabs(remote_dir):
            code, home, err = _exec(client, "pwd", timeout)
            if code != 0:
                raise DeployError(f"cannot find the remote home folder: {err.strip()}")
            remote_dir = posixpath.join(home.strip(), remote_dir)
        sftp = client.open_sftp()
        uploaded = 0
        try:
            made: set = set()
            _sftp_makedirs(sftp, remote_dir, made)
            for rel in project_files(root, path_pattern_exluded_tuple, file_suffix_tuple_exluded,
                                     only_upload_within_the_last_modify_time, file_volume_limit):
                target = posixpath.join(remote_dir, rel.as_posix())
                _sftp_makedirs(sftp, posixpath.dirname(target), made)
                sftp.put(str(root / rel), target)
                sftp.chmod(target, stat.S_IMODE((root / rel).stat().st_mode))
                uploaded += 1
        finally:
            sftp.close()
        logger.info("uploaded %d files of %s to %s:%s", uploaded, root, host, remote_dir)
        log = posixpath.join(remote_dir, f"funboost_deploy_{_safe(booster.queue_name)}.log")
        exports = "".join(f"export {k}={shlex.quote(str(v))}; " for k, v in (env or {}).items()
                          if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k))
        run = (f"{shlex.quote(python_interpreter)} -m funboost.deploy run {shlex.quote(module)} "
               f"{shlex.quote(booster.queue_name)} {int(process_num)}")
        command = (f"cd {shlex.quote(remote_dir)} && {extra_shell_str + '; ' if extra_shell_str else ''}{exports}"
                   f"export PYTHONPATH={shlex.quote(remote_dir)}${{PYTHONPATH:+:$PYTHONPATH}}; "
                   f"setsid nohup {run} > {shlex.quote(log)} 2>&1 < /dev/null & echo $!")
        code, out, err = _exec(client, command, timeout)
        if code != 0 or not out.strip().isdigit():
            raise DeployError(f"starting the consumers on {host} failed: {err.strip() or out.strip()}")
        pid = int(out.strip())
    finally:
        client.close()
    logger.info("started %d consumer process(es) of %r on %s (pid %d, log %s)", process_num, booster.queue_name,
                host, pid, log)
    return RemoteDeployment(connect_kwargs, known_hosts, trust_unknown_host, remote_dir, booster.queue_name, pid)


def _run_remote(module: str, queue_name: str, process_num: int) -> None:
    """What the deployed command runs: import the module, start the consumer processes, wait for SIGTERM."""
    import importlib

    from funboost.booster import ctrl_c_recv
    from funboost.registry import BoostersManager
    importlib.import_module(module)
    BoostersManager.get_booster(queue_name).multi_process_consume(process_num)
    ctrl_c_recv()


if __name__ == "__main__":  # python -m funboost.deploy run MODULE QUEUE N  (on the remote host)
    if len(sys.argv) != 5 or sys.argv[1] != "run":
        sys.stderr.write("usage: python -m funboost.deploy run MODULE QUEUE PROCESS_NUM\n")
        raise SystemExit(2)
    sys.path.insert(0, os.getcwd())
    _run_remote(sys.argv[2], sys.argv[3], int(sys.argv[4]))
