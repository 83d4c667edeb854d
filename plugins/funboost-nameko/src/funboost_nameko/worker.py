"""The funboost side of a NAMEKO queue's service process: core's foreign-worker host, one per queue.

``create_worker`` opens a Unix socket and starts ``python -m funboost_nameko.service`` (a fresh
interpreter: nameko needs eventlet's monkey-patching, which this process never gets). The service
process runs nameko's ``ServiceRunner`` with ``max_workers`` = ``concurrent_num``; each of its workers
forwards its rpc call here, where one thread per connection runs it through funboost
(:meth:`ForeignWorkerHost.run_message`: filter, expiry, pause, run-time window, qps, retries, status,
RPC result) and answers with the verb. A service process that dies is started again while the booster
consumes; when this process dies, the service process sees its control pipe close and exits without
acking, so RabbitMQ gives its requests to another service.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

from funboost.foreign import ForeignWorkerHost, Verb, envelope_from_foreign
from funboost.plugins.host import ConsumerHost

from funboost_nameko import wire
from funboost_nameko.options import NamekoOptions

#: seconds to wait for a service process to connect and start its runner
STARTUP_TIMEOUT = 60.0
#: seconds between restarts of a service process that died
RESTART_DELAY = 1.0


def envelope_from_call(args: list, kwargs: dict, correlation_id: Optional[str]) -> Any:
    """funboost's envelope from an rpc call: ``(envelope_json,)`` from funboost's publish, or keyword
    arguments of a plain nameko caller (its correlation id becomes the task id)."""
    return envelope_from_foreign(args, kwargs, correlation_id, framework="nameko")


NOT_RUN_ERROR = ("NotRun: funboost did not run this call (its arguments do not fit the function and it was "
                 "dead-lettered, or it was filtered, expired or killed): see the consumer's log")


class NamekoWorkerHost(ForeignWorkerHost):
    framework = "nameko"
    settle_seconds = 0.0  # one queue per host: nobody to wait for

    def __init__(self, options: NamekoOptions, queue: str) -> None:
        super().__init__()
        self.options = options
        self.queue = queue
        self.proc: Optional[subprocess.Popen] = None
        self._dir = tempfile.mkdtemp(prefix="funboost-nameko-")
        self._path = os.path.join(self._dir, "s")
        self._listener: Optional[socket.socket] = None
        self._control: Optional[socket.socket] = None
        self._control_ready = threading.Event()
        self._stop = threading.Event()
        self._max_workers = 1

    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        pass  # the service is generated in the service process from the queue's name

    # ------------------------------------------------------------------ the calls of the service process
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name=f"funboost-nameko-call-{self.queue}").start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            hello = wire.recv(sock)
            if hello.get("role") == "control":
                self._control = sock
                if wire.recv(sock).get("ready"):
                    self._control_ready.set()
                return  # later frames ("stopped") are not needed: the process exit says it
            while True:
                call = wire.recv(sock)
                outcome = self.run_message(
                    self.queue, envelope_from_call(call["args"], call["kwargs"], call.get("correlation_id")),
                    redelivered=bool(call.get("redelivered")))
                answer: dict[str, Any] = {"verb": outcome.verb.value}
                if outcome.verb is Verb.ACK and outcome.status is None:
                    # not run (dead-lettered as malformed, filtered, expired, killed): a nameko caller waits
                    # for an answer, and None would read as the function's result
                    answer = {"verb": Verb.FAIL.value, "error": NOT_RUN_ERROR}
                elif outcome.verb is Verb.ACK:
                    answer["result"] = _jsonable(outcome.result)
                elif outcome.verb in (Verb.FAIL, Verb.REJECT):
                    answer["error"] = outcome.error
                wire.send(sock, answer)
        except (OSError, EOFError, ValueError):
            pass  # the service process went away: its unacked requests come back from RabbitMQ
        finally:
            if sock is not self._control:
                sock.close()

    # ------------------------------------------------------------------ the service process
    def _spawn(self) -> subprocess.Popen:
        spec = {"queue": self.queue, "method_name": self.options.method_name, "socket": self._path,
                "config": self.options.nameko_config(self._max_workers)}
        self._control_ready.clear()
        return subprocess.Popen([sys.executable, "-m", "funboost_nameko.service", json.dumps(spec)],
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def create_worker(self, queues: list[str], concurrency: int) -> None:
        self._max_workers = concurrency
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._path)
        listener.listen(256)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True,
                         name=f"funboost-nameko-accept-{self.queue}").start()
        self.proc = self._spawn()

    def _await_start(self, proc: subprocess.Popen) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._control_ready.wait(0.1):
            if proc.poll() is not None or self._stop.is_set() or time.monotonic() > deadline:
                return False
        return True

    def run_worker(self) -> None:
        proc = self.proc
        assert proc is not None
        try:
            first = True
            while True:
                if self._await_start(proc) and first:
                    self.worker_ready()
                    first = False
                while proc.poll() is None and not self._stop.wait(0.2):
                    pass
                if self._stop.is_set():
                    return
                self.logger.warning("nameko service process of %s exited (%s): starting it again",
                                    self.queue, proc.returncode)
                if self._stop.wait(RESTART_DELAY):
                    return
                proc = self.proc = self._spawn()
        finally:
            self._finish(proc)

    def _finish(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()  # warm stop: running workers end, are answered and acked
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for s in (self._listener, self._control):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        shutil.rmtree(self._dir, ignore_errors=True)

    _stop_timeout = 30.0

    def stop_worker(self, timeout: float) -> None:
        self._stop_timeout = max(timeout, 1.0)
        self._stop.set()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
