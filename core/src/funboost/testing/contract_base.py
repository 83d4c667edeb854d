"""The broker contract suite: what every broker plugin must pass, gated by the capabilities it declares.

Use it from a plugin's tests::

    from funboost.testing import BrokerContract

    class TestMyBrokerContract(BrokerContract):
        broker_kind = "my_kind"
        broker_options = {"url": "..."}      # broker_exclusive_config for the tests (optional)

or certify any installed broker from outside its repository::

    pytest --pyargs funboost.testing.contract --funboost-broker KIND

Tests wait on conditions with deadlines, never on bare sleeps.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any, Callable, ClassVar, Optional

import pytest

from funboost.plugins.broker import Broker, Delivery, OutgoingMessage
from funboost.plugins.manager import get_broker_registry, normalize_kind, validate_broker_class


def require_service(reason: str) -> None:
    """Skip with ``reason``; fail instead when ``FUNBOOST_REQUIRE_SERVICES=1`` (CI)."""
    if os.environ.get("FUNBOOST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


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


def fetch_until(broker: Broker, count: int, timeout: float = 10.0, max_batch: int = 100) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (or fail at the deadline)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"fetched {len(got)} of {count} messages within {timeout}s")
        got.extend(broker.fetch(min(max_batch, count - len(got)), min(1.0, left)))
    return got


def body_text(d: Delivery) -> str:
    b = d.body
    if isinstance(b, dict):
        return json.dumps(b, sort_keys=True)
    if isinstance(b, (bytes, bytearray)):
        b = bytes(b).decode()
    return json.dumps(json.loads(b), sort_keys=True)


def envelope(i: int, **extra: Any) -> OutgoingMessage:
    tid = f"t-{uuid.uuid4().hex}"
    body = json.dumps({"x": i, "extra": {"task_id": tid, "publish_time": time.time(), **extra}})
    return OutgoingMessage(body=body, task_id=tid, payload=None)


def _payload_message(broker_cls: type, m: OutgoingMessage) -> OutgoingMessage:
    if broker_cls.accepts_payload:
        m.payload = json.loads(m.body)
    return m


class BrokerContract:
    """Subclass and set ``broker_kind`` (and optionally ``broker_options``)."""

    broker_kind: ClassVar[str] = ""
    broker_options: ClassVar[dict] = {}
    # options used by the redelivery test so a dead consumer is noticed quickly (e.g. heartbeat_timeout)
    fast_reclaim_options: ClassVar[dict] = {}
    # how long a dead consumer's messages may take to come back
    redelivery_timeout: ClassVar[float] = 30.0
    # seconds the broker may need before a new consumer receives messages (consumer-group joins)
    consumer_ready_timeout: ClassVar[float] = 10.0

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture
    def kind(self, request) -> str:
        kind = self.broker_kind or request.config.getoption("--funboost-broker", default=None)
        if not kind:
            pytest.skip("no broker kind given (use --funboost-broker KIND)")
        return kind

    @pytest.fixture
    def options_raw(self, request) -> dict:
        raw = dict(self.broker_options)
        cli = request.config.getoption("--funboost-broker-config", default=None)
        if cli:
            raw.update(json.loads(cli))
        return raw

    @pytest.fixture
    def broker_cls(self, kind) -> type:
        return get_broker_registry().resolve(kind)

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
    def make_broker(self, broker_cls, options, queue_name):
        made: list[Broker] = []

        def make(name: Optional[str] = None, opts: Any = None) -> Broker:
            b = broker_cls(name or queue_name, opts if opts is not None else options)
            made.append(b)
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

    def _caps(self, broker_cls):
        return broker_cls.capabilities

    def _need(self, broker_cls, cap: str, value: Any = True) -> None:
        if getattr(broker_cls.capabilities, cap) != value:
            pytest.skip(f"{broker_cls.kind} does not declare {cap}={value!r}")

    def _skip_broadcast(self, broker_cls) -> None:
        if broker_cls.capabilities.broadcast:
            pytest.skip(f"{broker_cls.kind} is a broadcast kind; work-queue tests do not apply")

    def _subscribe(self, broker: Broker) -> None:
        """Brokers that only deliver to live subscribers (broadcast) or join a group need a first fetch."""
        broker.fetch(1, 0.05) if broker.capabilities.broadcast else None

    # ------------------------------------------------------------------ registration
    def test_registration(self, kind, broker_cls):
        validate_broker_class(broker_cls)
        reg = get_broker_registry()
        assert reg.resolve(kind.upper()) is broker_cls
        assert reg.resolve(kind.lower()) is broker_cls
        assert reg.resolve(broker_cls.kind) is broker_cls
        for alias in broker_cls.aliases:
            assert reg.resolve(alias) is broker_cls
        names = {i.kind for i in reg.installed()}
        assert normalize_kind(broker_cls.kind) in names
        caps = broker_cls.capabilities
        assert caps.queue_size in ("exact", "approximate", "none")
        assert caps.ordering in ("fifo", "partition", "priority", "none")

    def test_options_reject_unknown_keys(self, broker_cls):
        with pytest.raises(Exception):
            broker_cls.parse_options({"surely_not_an_option_of_any_broker": 1})

    # ------------------------------------------------------------------ data path
    def test_publish_fetch_ack(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        msgs = [_payload_message(broker_cls, envelope(i)) for i in range(20)]
        broker.publish(msgs)
        got = fetch_until(broker, 20, timeout=self.consumer_ready_timeout + 10)
        assert sorted(body_text(d) for d in got) == sorted(json.dumps(json.loads(m.body), sort_keys=True)
                                                           for m in msgs)
        broker.ack(got)
        assert broker.fetch(10, 0.3) == []

    def test_fifo_order(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        if broker_cls.capabilities.ordering not in ("fifo", "priority", "partition"):
            pytest.skip("no ordering declared")
        msgs = [_payload_message(broker_cls, envelope(i, key="k")) for i in range(10)]
        for m in msgs:
            m.key = "k"  # one partition for partitioned brokers
        broker.publish(msgs)
        got = fetch_until(broker, 10, timeout=self.consumer_ready_timeout + 10)
        assert [json.loads(body_text(d))["x"] for d in got] == list(range(10))
        broker.ack(got)

    def test_fetch_respects_max_count_and_timeout(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        t0 = time.monotonic()
        assert broker.fetch(5, 0.2) == []
        assert time.monotonic() - t0 < 5.0
        broker.publish([_payload_message(broker_cls, envelope(i)) for i in range(6)])
        got = fetch_until(broker, 6, timeout=self.consumer_ready_timeout + 10, max_batch=3)
        assert len(got) == 6
        broker.ack(got)

    def test_requeue(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        m = _payload_message(broker_cls, envelope(1))
        broker.publish([m])
        [d] = fetch_until(broker, 1, timeout=self.consumer_ready_timeout + 10)
        broker.requeue([d])
        [d2] = fetch_until(broker, 1)
        assert body_text(d2) == body_text(d)
        broker.ack([d2])
        assert broker.fetch(1, 0.3) == []

    def test_reject_goes_to_dead_letter_queue(self, broker_cls, broker, make_broker, queue_name):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "dead_letter")
        dlx = make_broker(f"{queue_name}_dlx")
        dlx.fetch(1, 0.05)  # consumer-group brokers: join before messages arrive
        m = _payload_message(broker_cls, envelope(7))
        broker.publish([m])
        [d] = fetch_until(broker, 1, timeout=self.consumer_ready_timeout + 10)
        broker.reject([d], "contract test reason")
        [dd] = fetch_until(dlx, 1, timeout=self.consumer_ready_timeout + 10)
        obj = json.loads(body_text(dd))
        assert obj["x"] == 7
        assert obj["extra"]["dead_letter_reason"] == "contract test reason"
        dlx.ack([dd])
        assert broker.fetch(1, 0.3) == []

    def test_queue_size(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        caps = broker_cls.capabilities
        if caps.queue_size == "none":
            assert broker.queue_size().ready is None  # unknown, never a fake 0
            return
        broker.publish([_payload_message(broker_cls, envelope(i)) for i in range(5)])
        if caps.queue_size == "exact":
            wait_until(lambda: broker.queue_size().ready == 5, 10, message="ready == 5")
        else:
            wait_until(lambda: (broker.queue_size().ready or 0) >= 1, 15, message="ready >= 1")
        got = fetch_until(broker, 2, timeout=self.consumer_ready_timeout + 10, max_batch=2)
        if caps.in_flight_count:
            size = broker.queue_size()
            assert size.in_flight is not None and size.in_flight >= 2
            if caps.queue_size == "exact":
                assert size.ready == 3 and size.in_flight == 2
        broker.ack(got)
        rest = fetch_until(broker, 3, timeout=10)
        broker.ack(rest)
        wait_until(lambda: broker.queue_size().ready == 0, 15, message="ready == 0 after draining")

    def test_purge(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "purge")
        broker.fetch(1, 0.05)
        broker.publish([_payload_message(broker_cls, envelope(i)) for i in range(5)])
        if broker_cls.capabilities.queue_size != "none":
            wait_until(lambda: (broker.queue_size().ready or 0) >= 5, 15, message="5 ready")
        n = broker.purge()
        assert n == -1 or n >= 5
        assert broker.fetch(10, 0.5) == []

    def test_native_delay(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "native_delay")
        m = _payload_message(broker_cls, envelope(1))
        m.eta = time.time() + 2.0
        now_m = _payload_message(broker_cls, envelope(2))
        broker.publish([m, now_m])
        [first] = fetch_until(broker, 1, timeout=self.consumer_ready_timeout + 10)
        assert json.loads(body_text(first))["x"] == 2
        assert broker.fetch(1, 0.5) == [] or time.time() >= m.eta - 0.05
        [later] = fetch_until(broker, 1, timeout=10)
        assert time.time() >= m.eta - 0.05
        assert json.loads(body_text(later))["x"] == 1
        broker.ack([first, later])

    def test_priority(self, broker_cls, broker):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "priority")
        msgs = []
        for i, prio in enumerate([1, 5, 3, 0, 9]):
            m = _payload_message(broker_cls, envelope(prio))
            m.priority = prio
            msgs.append(m)
        broker.publish(msgs)
        time.sleep(0)  # priorities apply to what is waiting; everything is published above
        got = fetch_until(broker, 5, timeout=self.consumer_ready_timeout + 10)
        assert [json.loads(body_text(d))["x"] for d in got] == [9, 5, 3, 1, 0]
        broker.ack(got)

    # ------------------------------------------------------------------ crash safety
    def test_unacked_messages_come_back_after_consumer_is_killed(self, broker_cls, options_raw, queue_name,
                                                                  make_broker, kind):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "at_least_once")
        opts = {**options_raw, **self.fast_reclaim_options}
        pub = make_broker(opts=broker_cls.parse_options(opts))
        pub.publish([envelope(i) for i in range(10)])
        script = textwrap.dedent(f"""
            import json, os, signal, sys, time
            from funboost.plugins.manager import resolve_broker_kind
            cls = resolve_broker_kind({kind!r})
            b = cls({queue_name!r}, cls.parse_options(json.loads({json.dumps(json.dumps(opts))})))
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 4 and time.monotonic() < deadline:
                got += b.fetch(4 - len(got), 1.0)
            print(len(got), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == -9, proc.stderr
        assert proc.stdout.strip() == "4", proc.stdout + proc.stderr
        survivor = make_broker(opts=broker_cls.parse_options(opts))
        got = fetch_until(survivor, 10, timeout=self.redelivery_timeout + self.consumer_ready_timeout)
        assert sorted(json.loads(body_text(d))["x"] for d in got) == list(range(10))
        survivor.ack(got)

    # ------------------------------------------------------------------ through the engine
    def test_end_to_end_through_boost(self, broker_cls, options_raw, queue_name):
        self._skip_broadcast(broker_cls)
        from funboost import BoosterParams, boost
        done: dict[int, int] = {}
        lock = threading.Lock()

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=8, state_backend="memory", log_to_console=False))
        def work(x: int, y: int = 0) -> int:
            with lock:
                done[x] = done.get(x, 0) + 1
            return x + y

        try:
            work.consume()
            for i in range(30):
                work.push(i, y=1)
            wait_until(lambda: len(done) == 30, self.consumer_ready_timeout + 20, message="30 tasks done")
        finally:
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()
        assert sorted(done) == list(range(30))

    def test_malformed_message_is_dead_lettered_and_consumer_survives(self, broker_cls, options_raw, queue_name,
                                                                      make_broker):
        self._skip_broadcast(broker_cls)
        self._need(broker_cls, "dead_letter")
        from funboost import BoosterParams, boost
        done: list[int] = []

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=2, state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            done.append(x)

        raw = make_broker()
        dlx = make_broker(f"{queue_name}_dlx")
        dlx.fetch(1, 0.05)
        try:
            work.consume()
            bad = [OutgoingMessage(body="this is not json", task_id="bad1"),
                   OutgoingMessage(body=json.dumps([1, 2, 3]), task_id="bad2"),
                   OutgoingMessage(body=json.dumps({"nope": 1}), task_id="bad3")]
            raw.publish(bad)
            work.push(42)
            wait_until(lambda: done == [42], self.consumer_ready_timeout + 20, message="valid task ran")
            got = fetch_until(dlx, 3, timeout=self.consumer_ready_timeout + 20)
            reasons = sorted(json.loads(body_text(d))["extra"]["dead_letter_reason"] for d in got)
            assert any("not valid JSON" in r for r in reasons), reasons
            assert any("JSON object" in r for r in reasons), reasons
            assert any("arguments do not fit" in r for r in reasons), reasons
            dlx.ack(got)
        finally:
            work.stop_consume(10)

    def test_booster_message_count_and_clear(self, broker_cls, options_raw, queue_name):
        self._skip_broadcast(broker_cls)
        from funboost import BoosterParams, boost

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            pass

        caps = broker_cls.capabilities
        if caps.queue_size == "none":
            assert work.get_message_count() == -1
            return
        work.broker.fetch(1, 0.05)  # consumer-group brokers: be a member before counting
        for i in range(4):
            work.push(i)
        if caps.queue_size == "exact":
            wait_until(lambda: work.get_message_count() == 4, 10, message="count == 4")
        else:
            wait_until(lambda: work.get_message_count() >= 1, 15, message="count >= 1")
        if caps.purge:
            work.clear()
            wait_until(lambda: work.get_message_count() == 0, 15, message="count == 0 after clear")

    # ------------------------------------------------------------------ broadcast kinds
    def test_broadcast_reaches_every_consumer(self, broker_cls, make_broker, queue_name):
        self._need(broker_cls, "broadcast")
        a, b = make_broker(), make_broker()
        a.fetch(1, 0.2)
        b.fetch(1, 0.2)  # subscribe
        pub = make_broker()
        pub.publish([envelope(1)])
        assert len(fetch_until(a, 1)) == 1
        assert len(fetch_until(b, 1)) == 1
