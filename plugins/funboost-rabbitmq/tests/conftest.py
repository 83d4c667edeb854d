"""Fixtures: a real RabbitMQ on loopback (``FUNBOOST_RABBITMQ_URL``), unique queue names per test."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
import threading
from typing import Callable, Iterator

import pytest

from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions


def _unavailable(reason: str) -> None:
    if os.environ.get("FUNBOOST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"FUNBOOST_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    opts = RabbitmqOptions()
    reason = RabbitmqBroker.check_available(opts)
    if reason:
        _unavailable(reason)
    return opts.resolved_url()


@pytest.fixture
def queue_name() -> str:
    return f"fbtest_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_broker(rabbitmq_url: str) -> Iterator[Callable[..., RabbitmqBroker]]:
    """Builds brokers on unique queues and deletes their queues afterwards."""
    made: list[RabbitmqBroker] = []

    def make(queue: str, **options) -> RabbitmqBroker:
        options.setdefault("url", rabbitmq_url)
        b = RabbitmqBroker(queue, RabbitmqOptions(**options))
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        try:
            b.close()
        except Exception:
            pass
    for b in made:
        try:
            b.delete_queues()
        except Exception:
            pass


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02,
               message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def rabbitmqctl(rabbitmq_url: str) -> str:
    """Path of rabbitmqctl if this process may drive the local server with it."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        _unavailable("rabbitmqctl is not on PATH")
    r = subprocess.run([path, "-q", "list_vhosts"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        _unavailable(f"rabbitmqctl cannot reach the local node: {r.stderr.strip()[:200]}")
    return path


@pytest.fixture
def private_vhost(rabbitmqctl: str, rabbitmq_url: str) -> Iterator[str]:
    """A throwaway vhost, so that closing connections never disturbs anyone else on the server.
    Yields the AMQP URL for it."""
    vhost = f"fbtest_{uuid.uuid4().hex[:10]}"
    user = rabbitmq_url.split("://", 1)[1].split(":", 1)[0]
    subprocess.run([rabbitmqctl, "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([rabbitmqctl, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    base = rabbitmq_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{vhost}"
    finally:
        subprocess.run([rabbitmqctl, "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def run_in_threads(work: Callable[[int], None], n: int) -> None:
    """Run ``work(k)`` for k in 0..n-1 in n threads at once; re-raise the first error any of them hit."""
    errors: list = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
