"""Fixtures, settings and helpers shared by every module of the contract suite.

A contract test class derives from :class:`ContractBase` and from the feature mixins it wants (see
:class:`funboost.testing.contract.BrokerContract` for all of them). Every setting below is a class
attribute a plugin's own test class may override, and each one can also be given on the command line of
``pytest --pyargs funboost.testing.contract`` (see :mod:`funboost.testing.pytest_plugin`).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Callable, ClassVar, Optional

import pytest

from funboost.plugins.broker import Broker, Delivery, OutgoingMessage
from funboost.testing.requirements import contract_settings, load_broker_class


def require_service(reason: str) -> None:
    """Skip with ``reason``; fail instead when ``FUNBOOST_REQUIRE_SERVICES=1`` (CI)."""
    if os.environ.get("FUNBOOST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


_availability: dict[tuple[type, str], Optional[str]] = {}


def require_available(broker_cls: type[Broker], options: Any, hint: str = "") -> None:
    """:func:`require_service` with ``broker_cls.check_available(options)``'s reason, if it gives one (and
    ``hint``, e.g. how to start the server). Asked once per class and options in a process: a test
    session does not wait for an unreachable server's timeout again in every test."""
    key = (broker_cls, repr(options))
    if key not in _availability:
        _availability[key] = broker_cls.check_available(options)
    reason = _availability[key]
    if reason:
        require_service(f"{reason}{hint}")


def assert_unreachable_reason_hides_password(broker_cls: type[Broker], options: Any, secret: str) -> None:
    """``broker_cls.check_available(options)``, with options naming an unreachable server whose URL holds
    ``secret`` as its password, gives a reason (shown by ``funboost brokers``, skip messages and errors)
    that hides the password."""
    reason = broker_cls.check_available(options)
    assert reason, f"{broker_cls.__name__}.check_available found an unreachable server available"
    assert secret not in reason, f"the reason shows the password: {reason}"
    assert "***" in reason, f"the reason should show that a password was given (as ***): {reason}"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class MessagesLost(AssertionError):
    """Raised early when a broker with exact queue sizes has nothing left that could still arrive."""


def _nothing_left(broker: Broker) -> bool:
    """True when an exact-size broker reports no ready and no delayed message."""
    if broker.capabilities.queue_size != "exact":
        return False
    try:
        size = broker.queue_size()
    except Exception:
        return False
    return size.ready == 0 and not size.delayed


def fetch_until(broker: Broker, count: int, timeout: float = 10.0, max_batch: int = 100,
                lost_after: Optional[float] = 1.0) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (or fail at the deadline).

    Every ``fetch`` must honour its ``max_count``. A broker with exact queue sizes that reports an empty
    queue for ``lost_after`` seconds while messages are still missing has lost them: fail at once
    instead of waiting out the deadline (``lost_after=None`` turns this off, e.g. for delayed messages).
    """
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    empty_since: Optional[float] = None
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"fetch() delivered {len(got)} of {count} expected messages within {timeout:g}s "
                                 f"(published messages were lost or withheld)")
        want = min(max_batch, count - len(got))
        batch = broker.fetch(want, min(1.0, left))
        assert len(batch) <= want, (f"fetch(max_count={want}) returned {len(batch)} deliveries: fetch must never "
                                    f"hand out more than max_count (the engine's free capacity)")
        got.extend(batch)
        if batch or lost_after is None or len(got) >= count:
            empty_since = None
            continue
        if _nothing_left(broker):
            now = time.monotonic()
            empty_since = empty_since if empty_since is not None else now
            if now - empty_since >= lost_after:
                raise MessagesLost(f"fetch() delivered {len(got)} of {count} messages and queue_size() reports "
                                   f"nothing ready or delayed: {count - len(got)} message(s) were lost")
        else:
            empty_since = None
    return got


def expect_ready(broker: Broker, count: int, timeout: float = 15.0) -> None:
    """Wait until the broker counts ``count`` ready messages (exact sizes) or at least one (approximate).
    ``publish`` returns once the broker has the messages, so an exact count is right within seconds."""
    kind = broker.capabilities.queue_size
    if kind == "exact":
        try:
            wait_until(lambda: broker.queue_size().ready == count, min(timeout, 5.0),
                       message=f"queue_size().ready == {count} after publishing {count} (queue_size='exact')")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last reported: {broker.queue_size()}") from exc
    elif kind == "approximate":
        wait_until(lambda: (broker.queue_size().ready or 0) >= 1, timeout,
                   message=f"queue_size().ready >= 1 after publishing {count} (queue_size='approximate')")


def same_value(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down (``1`` is not ``1.0``, ``[]`` not ``()``), and NaN equal
    to NaN: what a round trip through a broker must keep."""
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def body_text(d: Delivery) -> str:
    """A delivery's body as canonical JSON text (sorted keys), whatever form the broker hands over."""
    b = d.body
    if isinstance(b, dict):
        return json.dumps(b, sort_keys=True)
    if isinstance(b, (bytes, bytearray)):
        b = bytes(b).decode()
    return json.dumps(json.loads(b), sort_keys=True)


def body_x(d: Delivery) -> Any:
    return json.loads(body_text(d))["x"]


def envelope(i: int, **extra: Any) -> OutgoingMessage:
    """A message envelope as the engine publishes it, with argument ``x=i``."""
    tid = f"t-{uuid.uuid4().hex}"
    body = json.dumps({"x": i, "extra": {"task_id": tid, "publish_time": time.time(), **extra}})
    return OutgoingMessage(body=body, task_id=tid, payload=None)


class ContractBase:
    """Settings and fixtures of the contract suite. Subclass and set ``broker_kind``.

    ``broker_kind`` may also be ``"package.module:BrokerClass"`` (a class that is not installed as an
    entry point yet); it is then registered for the test session.
    """

    broker_kind: ClassVar[str] = ""
    # broker_exclusive_config for the tests (connection settings otherwise come from env variables)
    broker_options: ClassVar[dict] = {}
    # options used by the crash/lease tests so that a dead consumer is noticed quickly
    # (e.g. {"heartbeat_timeout": 1.0}); also --funboost-reclaim-option KEY=VALUE
    fast_reclaim_options: ClassVar[dict] = {}
    # how long a killed consumer's messages may take to come back
    redelivery_timeout: ClassVar[float] = 30.0
    # seconds the broker may need before a new consumer receives messages (consumer-group joins)
    consumer_ready_timeout: ClassVar[float] = 10.0
    # how long a living consumer holds a message in the lease test (longer than the reclaim timeout
    # that fast_reclaim_options configure)
    long_task_seconds: ClassVar[float] = 6.0
    # how long a requeued message may take to be fetchable again (native_requeue kinds)
    requeue_timeout: ClassVar[float] = 5.0

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture
    def settings(self, request) -> dict[str, Any]:
        """The suite's settings: class attributes, overridden by the command line."""
        names = ("redelivery_timeout", "consumer_ready_timeout", "long_task_seconds", "requeue_timeout")
        values: dict[str, Any] = {n: getattr(self, n) for n in names}
        values.update(contract_settings(request.config))
        return values

    @pytest.fixture
    def kind(self, request) -> str:
        kind = self.broker_kind or request.config.getoption("--funboost-broker", default=None)
        if not kind:
            pytest.skip("no broker kind given (use --funboost-broker KIND)")
        return kind

    @pytest.fixture
    def options_raw(self, request) -> dict:
        raw = dict(self.broker_options)
        raw.update(contract_settings(request.config, "broker_options"))
        return raw

    @pytest.fixture
    def reclaim_options_raw(self, request, options_raw) -> dict:
        """Broker options for the crash and lease tests: ``options_raw`` + ``fast_reclaim_options``."""
        return {**options_raw, **self.fast_reclaim_options,
                **contract_settings(request.config, "reclaim_options")}

    @pytest.fixture
    def broker_cls(self, kind) -> type:
        return load_broker_class(kind)

    @pytest.fixture
    def options(self, broker_cls, options_raw):
        opts = broker_cls.parse_options(options_raw)
        reason = broker_cls.check_available(opts)
        if reason:
            require_service(f"{broker_cls.kind}: {reason}")
        return opts

    @pytest.fixture
    def queue_name(self) -> str:
        return f"contract_{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def serve_consumer(self, broker_cls) -> Callable[[Broker], object]:
        """Called on every broker the suite makes, before anything is published to it.

        Kinds with ``capabilities.needs_serving_consumer`` (transports without a server, where a message
        can only be published to a consumer that is serving: grpc, tcp, http) start serving through
        ``Broker.serve()``. A plugin whose kind needs more overrides this fixture in its test class.
        """
        if broker_cls.capabilities.needs_serving_consumer:
            return lambda broker: broker.serve()
        return lambda broker: None

    @pytest.fixture
    def make_broker(self, broker_cls, options, queue_name, serve_consumer):
        made: list[Broker] = []

        def make(name: Optional[str] = None, opts: Any = None) -> Broker:
            b = broker_cls(name or queue_name, opts if opts is not None else options)
            made.append(b)
            serve_consumer(b)
            return b
        yield make
        for b in made:
            try:
                if broker_cls.capabilities.purge:
                    b.purge()
            except Exception:
                pass
            try:
                b.close()
            except Exception:
                pass

    @pytest.fixture
    def broker(self, make_broker) -> Broker:
        return make_broker()

    @pytest.fixture
    def message(self, broker_cls) -> Callable[..., OutgoingMessage]:
        """Build a message for this kind (in-process kinds also get the decoded payload)."""
        def build(i: int, **extra: Any) -> OutgoingMessage:
            m = envelope(i, **extra)
            if broker_cls.accepts_payload:
                m.payload = json.loads(m.body)
            return m
        return build

    @pytest.fixture
    def ready_broker(self, broker, message, settings) -> Broker:
        """``broker`` after one message went through it: consumer-group kinds have joined their group."""
        broker.publish([message(-1)])
        got = fetch_until(broker, 1, timeout=settings["consumer_ready_timeout"] + 10)
        broker.ack(got)
        return broker
