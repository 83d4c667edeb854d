"""Fixtures: a real RabbitMQ on loopback (``FUNBOOST_RABBITMQ_URL``), unique queue names per test."""
from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

from funboost.testing import require_service  # skips; fails with FUNBOOST_REQUIRE_SERVICES=1
from funboost.testing import wait_until  # noqa: F401 - the tests import it from here
from funboost_rabbitmq import RabbitmqBroker, RabbitmqOptions


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    opts = RabbitmqOptions()
    reason = RabbitmqBroker.check_available(opts)
    if reason:
        require_service(reason)
    return opts.resolved_url()


@pytest.fixture
def queue_name() -> str:
    return f"fbtest_{uuid.uuid4().hex[:12]}"


@contextmanager
def broker_factory(rabbitmq_url: str, broker_cls: Any = RabbitmqBroker, options_cls: Any = RabbitmqOptions,
                   queue_suffix: str = "") -> Iterator[Callable[..., Any]]:
    """``make(queue, **options)`` builds a ``broker_cls`` on ``queue + queue_suffix`` (url defaulting to
    ``rabbitmq_url``); at the end every broker made is closed and its queues deleted."""
    made: list = []

    def make(queue: str, **options: Any) -> Any:
        options.setdefault("url", rabbitmq_url)
        b = broker_cls(f"{queue}{queue_suffix}", options_cls(**options))
        made.append(b)
        return b

    try:
        yield make
    finally:
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


@pytest.fixture
def make_broker(rabbitmq_url: str) -> Iterator[Callable[..., RabbitmqBroker]]:
    """Builds brokers on unique queues and deletes their queues afterwards."""
    with broker_factory(rabbitmq_url) as make:
        yield make


@pytest.fixture(scope="session")
def rabbitmqctl(rabbitmq_url: str) -> str:
    """Path of rabbitmqctl if this process may drive the local server with it."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        require_service("rabbitmqctl is not on PATH")
    r = subprocess.run([path, "-q", "list_vhosts"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        require_service(f"rabbitmqctl cannot reach the local node: {r.stderr.strip()[:200]}")
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
