"""Engine-level helpers of the server transports' tests (grpc, tcp, http): a function served through
``@boost`` on a kind for the length of a ``with`` block, and the push / sync_call / remote error scenario all
three run. Their clients, errors and replies are core's (:mod:`funboost.transport`), so the expectations are
the same; each plugin's ``tests/test_e2e.py`` keeps only the checks of its own wire format."""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import pytest

from funboost.plugins.broker import Broker, OutgoingMessage
from funboost.plugins.manager import resolve_broker_kind
from funboost.result import RemoteTaskError
from funboost.testing.contract.base import wait_until
from funboost.testing.servers import free_port
from funboost.transport.security import InsecureBind

__all__ = ["serving_booster", "serving_divide", "assert_sync_call_and_remote_error", "assert_pushes_run", "serve",
           "check_non_loopback_bind_needs_a_token", "assert_a_call_is_answered_by_the_run_after_a_requeue"]


@contextmanager
def serving_booster(kind: str, queue_name: str, func: Callable[..., Any], config: Optional[dict[str, Any]] = None,
                    **params: Any) -> Iterator[Any]:
    """``func`` boosted on ``kind`` (``config``: broker_exclusive_config, default a free port; ``params``: more
    BoosterParams; memory state backend, no console log) and consuming; stopped (10 s grace) at the end."""
    from funboost import BoosterParams, boost

    params = {"state_backend": "memory", "log_to_console": False, **params}
    booster = boost(BoosterParams(queue_name=queue_name, broker_kind=kind,
                                  broker_exclusive_config=config if config is not None else {"port": free_port()},
                                  **params))(func)
    booster.consume()
    try:
        yield booster
    finally:
        booster.stop_consume(10)


@contextmanager
def serving_divide(kind: str, queue_name: str, config: Optional[dict[str, Any]] = None,
                   **params: Any) -> Iterator[tuple[Any, list]]:
    """``divide(a, b=1) -> a / b`` served (8 threads, no retries); yields ``(booster, seen)``, ``seen`` the
    ``(a, b)`` of every run."""
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def divide(a: int, b: int = 1) -> float:
        with lock:
            seen.append((a, b))
        return a / b

    with serving_booster(kind, queue_name, divide, config, concurrent_num=8, max_retry_times=0, **params) as booster:
        yield booster, seen


def assert_sync_call_and_remote_error(divide: Any, remote_error_type: type) -> RemoteTaskError:
    """On :func:`serving_divide`'s booster: a sync_call returns the result; a function error comes back as
    ``funboost.RemoteTaskError`` (the kind's ``remote_error_type``) in one round trip. Returns that error."""
    assert divide.sync_call(10, b=4, timeout=10) == 2.5
    with pytest.raises(RemoteTaskError) as info:
        divide.sync_call(1, b=0, timeout=10)
    assert isinstance(info.value, remote_error_type)
    assert info.value.exception_type == "ZeroDivisionError"
    assert "division by zero" in (info.value.exception_msg or "")
    return info.value


def assert_pushes_run(divide: Any, seen: list, n: int = 20) -> None:
    """``n`` pushes to :func:`serving_divide`'s booster all run (``seen`` grows by ``n``) and none stays queued."""
    before = len(seen)
    for i in range(n):
        divide.push(i, b=1)
    wait_until(lambda: len(seen) == before + n, 20, message=f"{n} pushed tasks ran")
    assert divide.get_message_count() == 0


def assert_a_call_is_answered_by_the_run_after_a_requeue(kind: str, queue_name: str) -> None:
    """A ``sync_call`` whose first run raises ``ExceptionForRequeue`` is answered by the next run's result; so is
    one whose first attempt fails under ``retry_mode="requeue"`` (the retry is a copy published with a
    countdown). Both used to answer ``NoResult``: the copy went out through the client without the caller,
    and the original's ack failed the waiting call."""
    from funboost import ExceptionForRequeue

    runs: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(key: str, how: str) -> str:
        with lock:
            runs[key] = runs.get(key, 0) + 1
            n = runs[key]
        if n == 1 and how == "requeue":
            raise ExceptionForRequeue("not yet")
        if n == 1:
            raise ValueError("first attempt fails")
        return f"{key} ran {n} times"

    with serving_booster(kind, queue_name, flaky, concurrent_num=4, max_retry_times=2,
                         advanced_retry_config={"retry_mode": "requeue", "retry_base_interval": 0.2}) as booster:
        assert booster.sync_call("a", "requeue", timeout=20) == "a ran 2 times"
        assert booster.sync_call("b", "retry", timeout=20) == "b ran 2 times"
        assert booster.get_message_count() == 0


def serve(kind: str, queue_name: str, port: int, **options: Any) -> Broker:
    """A broker of ``kind`` serving ``queue_name`` on ``port`` (no engine: the test fetches or inspects it)."""
    cls = resolve_broker_kind(kind)
    b = cls(queue_name, cls.parse_options({"port": port, **options}))
    b.serve()  # type: ignore[attr-defined]
    return b


def check_non_loopback_bind_needs_a_token(kind: str, queue_name: str, port: int,
                                          publisher_options: Optional[dict[str, Any]] = None,
                                          after_refusal: Optional[Callable[[], None]] = None) -> None:
    """A port other hosts can reach never runs tasks for anyone: serving on 0.0.0.0 without a token raises
    ``InsecureBind`` and leaves nothing listening (``after_refusal``: the kind's own checks of that); with a
    token it starts, and a publisher on loopback with the token (``publisher_options``, default the port)
    reaches it."""
    cls = resolve_broker_kind(kind)
    refused = cls(queue_name, cls.parse_options({"host": "0.0.0.0", "port": port}))
    try:
        with pytest.raises(InsecureBind, match="token"):
            refused.serve()  # type: ignore[attr-defined]
    finally:
        refused.close()
    with socket.socket() as s:  # nothing listens on that port afterwards
        assert s.connect_ex(("127.0.0.1", port)) != 0
    if after_refusal is not None:
        after_refusal()
    consumer = serve(kind, queue_name, port, host="0.0.0.0", token="s3cret")
    try:
        pub = cls(queue_name, cls.parse_options({**(publisher_options or {"port": port}), "token": "s3cret"}))
        pub.publish([OutgoingMessage(body='{"x": 1}')])
        assert consumer.queue_size().ready == 1
    finally:
        consumer.close()
