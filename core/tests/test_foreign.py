"""funboost.foreign, the adapter for frameworks as brokers: envelope from a foreign message, outcome
verbs, eta parsing, running a foreign message through a real consumer, and the worker host's
bookkeeping (settle, join / leave, pause / window / qps mirrored, stop with the last booster)."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest

from funboost import BoosterParams, ExceptionForRequeue, boost
from funboost.engine.consumer import Consumer
from funboost.records import FunctionResultStatus
from funboost.enums import RunStatus
from funboost.foreign import (ForeignWorkerHost, Verb, envelope_from_foreign, eta_datetime, join_worker_host,
                              outcome_of, parse_eta, run_foreign_delivery, seconds_until, worker_host)
from funboost.plugins.host import ConsumerHost
from funboost.testing import wait_until


# ------------------------------------------------------------------------------------------- eta
def test_parse_eta_reads_every_form_frameworks_write():
    ts = 1767225600.0  # 2026-01-01T00:00:00Z
    assert parse_eta(None) is None
    assert parse_eta(ts) == ts and parse_eta(int(ts)) == ts
    assert parse_eta(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) == ts
    assert parse_eta(dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == ts
    assert parse_eta(dt.datetime(2026, 1, 1)) == ts  # naive: UTC, as the frameworks write it
    assert parse_eta("2026-01-01T00:00:00+00:00") == ts
    assert parse_eta("2026-01-01T00:00:00Z") == ts
    assert parse_eta("2026-01-01T00:00:00") == ts
    assert parse_eta("2026-01-01T00:00:00.250000+00:00") == ts + 0.25
    assert parse_eta("not a date") is None
    assert parse_eta(True) is None  # a flag, not a time


def test_eta_datetime_and_seconds_until():
    d = eta_datetime(1767225600.5)
    assert d.tzinfo is not None and d.utcoffset() == dt.timedelta(0)
    assert parse_eta(d) == 1767225600.5
    assert seconds_until(110.0, now=100.0) == 10.0
    assert seconds_until(90.0, now=100.0) == 0.0
    assert seconds_until(None) == 0.0 and seconds_until("garbage") == 0.0


# ------------------------------------------------------------------------------------------- envelope
def test_envelope_of_funboosts_own_publish_passes_through():
    env = json.dumps({"x": 1, "extra": {"task_id": "t1"}})
    assert envelope_from_foreign((env,), {}, "framework-id") is env
    assert envelope_from_foreign((env.encode(),), {}, None) == env.encode()


def test_envelope_from_keyword_arguments_takes_the_framework_task_id():
    body = json.loads(envelope_from_foreign((), {"x": 4, "y": 5}, "abc-123"))
    assert body == {"x": 4, "y": 5, "extra": {"task_id": "abc-123"}}
    assert json.loads(envelope_from_foreign((), {"x": 4}, None)) == {"x": 4}


def test_envelope_from_positional_arguments_is_wrapped_for_the_dead_letter_queue():
    body = json.loads(envelope_from_foreign((1, 2), {"k": 3}, "id", framework="rq"))
    assert body == {"rq_args": [1, 2], "rq_kwargs": {"k": 3}}


# ------------------------------------------------------------------------------------------- outcome
def _status(run_status: str, success: bool = False, result: Any = None) -> FunctionResultStatus:
    st = FunctionResultStatus("q", "t", {})
    st.run_status, st.success, st.result = run_status, success, result
    if not success:
        st.exception_type, st.exception_msg = "ValueError", "boom"
    return st


@pytest.mark.parametrize("run_status, success, verb", [
    (RunStatus.FINISH, True, Verb.ACK),
    (RunStatus.FINISH, False, Verb.FAIL),
    (RunStatus.DEAD_LETTERED, False, Verb.FAIL),
    (RunStatus.KILLED, False, Verb.FAIL),
    (RunStatus.REQUEUED, False, Verb.IGNORE),
    (RunStatus.RETRY_LATER, False, Verb.IGNORE),
    ("retry_later", False, Verb.IGNORE),  # plain strings from before RunStatus compare the same
    ("some_future_status", False, Verb.FAIL),  # unknown: final, never "goes on in another message"
])
def test_outcome_verbs(run_status, success, verb):
    out = outcome_of(_status(run_status, success, result=42 if success else None))
    assert out.verb is verb
    if verb is Verb.ACK:
        assert out.result == 42
    if verb is Verb.FAIL:
        assert out.error == "ValueError: boom"


def test_outcome_of_a_message_that_did_not_run_is_a_plain_ack():
    out = outcome_of(None)
    assert out.verb is Verb.ACK and out.result is None and out.status is None


# ------------------------------------------------------------------------------------------- run through a consumer
@pytest.fixture
def make_consumer():
    made: list[Consumer] = []

    def make(func, **params: Any) -> Consumer:
        params.setdefault("broker_kind", "memory")
        params.setdefault("state_backend", "memory")
        params.setdefault("log_to_console", False)
        b = boost(BoosterParams(**params))(func)
        c = Consumer(b)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop(timeout=2)


def test_run_foreign_delivery_maps_real_runs_to_verbs(qname, make_consumer):
    calls: list[int] = []

    def f(x: int) -> int:
        calls.append(x)
        if x < 0:
            raise ValueError(f"negative {x}")
        if x == 0:
            raise ExceptionForRequeue("again later")
        return x * 2

    c = make_consumer(f, queue_name=qname, max_retry_times=1, do_task_filtering=True,
                      is_print_detail_exception=False)
    ok = run_foreign_delivery(c, envelope_from_foreign((), {"x": 5}, "id-5"))
    assert ok.verb is Verb.ACK and ok.result == 10 and ok.status.task_id == "id-5"
    bad = run_foreign_delivery(c, envelope_from_foreign((), {"x": -1}, "id-neg"))
    assert bad.verb is Verb.FAIL and bad.error == "ValueError: negative -1"
    assert bad.status.run_times == 2  # funboost's retry ran; the framework must not add its own
    again = run_foreign_delivery(c, envelope_from_foreign((), {"x": 0}, "id-0"))
    assert again.verb is Verb.IGNORE  # republished by funboost: the framework's message just ends
    dup = run_foreign_delivery(c, envelope_from_foreign((), {"x": 5}, "id-5b"))
    assert dup.verb is Verb.ACK and dup.status is None  # filtered: not run, recorded by funboost
    assert calls == [5, -1, -1, 0]


def test_a_malformed_foreign_message_is_dead_lettered_not_run(qname, make_consumer):
    calls: list[int] = []
    c = make_consumer(lambda x: calls.append(x), queue_name=qname)
    out = run_foreign_delivery(c, envelope_from_foreign((1, 2), {}, "id", framework="celery"))
    assert out.verb is Verb.ACK and out.status is None and calls == []
    dlx = c.broker.dead_letter_broker()
    got = dlx.fetch(1, 2.0)
    assert len(got) == 1 and "celery_args" in json.dumps(json.loads(got[0].body))


def test_run_foreign_delivery_waits_for_the_eta_and_rejects_when_stopping(qname, make_consumer):
    c = make_consumer(lambda x: x, queue_name=qname)
    t0 = time.time()
    out = run_foreign_delivery(c, envelope_from_foreign((), {"x": 1}, "e1"), eta=t0 + 0.3)
    assert out.verb is Verb.ACK and out.result == 1 and time.time() - t0 >= 0.3
    threading.Timer(0.2, c.stop_event.set).start()
    out = run_foreign_delivery(c, envelope_from_foreign((), {"x": 2}, "e2"), eta=time.time() + 60)
    assert out.verb is Verb.REJECT


def test_a_paused_queue_holds_the_foreign_message_until_resumed(qname, make_consumer):
    ran = threading.Event()
    c = make_consumer(lambda x: ran.set(), queue_name=qname)
    c.paused = True
    result: list = []
    t = threading.Thread(target=lambda: result.append(run_foreign_delivery(c, envelope_from_foreign((), {"x": 1}))))
    t.start()
    assert not ran.wait(0.5)
    c.paused = False
    t.join(10)
    assert ran.is_set() and result[0].verb is Verb.ACK


def test_without_hold_a_paused_or_closed_window_queue_rejects_the_foreign_message_at_once(qname, make_consumer):
    import datetime as dt
    calls: list[int] = []
    c = make_consumer(lambda x: calls.append(x), queue_name=qname)
    c.paused = True
    out = run_foreign_delivery(c, envelope_from_foreign((), {"x": 1}), hold=False)
    assert out.verb is Verb.REJECT and "paused" in out.error and calls == []
    c.paused = False
    assert run_foreign_delivery(c, envelope_from_foreign((), {"x": 2}), hold=False).verb is Verb.ACK
    closed = f"{(dt.datetime.now().minute + 30) % 60} * * * *"
    w = make_consumer(lambda x: calls.append(x), queue_name=qname + "_w", allow_run_time_cron=closed)
    out = run_foreign_delivery(w, envelope_from_foreign((), {"x": 3}), hold=False)
    assert out.verb is Verb.REJECT and "run-time window" in out.error
    assert calls == [2]


# ------------------------------------------------------------------------------------------- the worker host
class ThreadFramework(ForeignWorkerHost):
    """The smallest real framework: one in-process queue per funboost queue and N worker threads that
    take messages from the queues they are told to consume. Records what the host asked of it."""

    framework = "threadfw"
    settle_seconds = 0.2
    control_interval = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.inbox: dict[str, list[str]] = {}
        self.active: set[str] = set()
        self.results: dict[str, Any] = {}
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cv = threading.Condition()

    def register_queue(self, queue: str, consumer: ConsumerHost) -> None:
        self.calls.append(("register", queue))
        self.inbox.setdefault(queue, [])

    def create_worker(self, queues: list[str], concurrency: int) -> None:
        self.calls.append(("create", tuple(sorted(queues)), concurrency))
        self.active = set(queues)
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(concurrency)]

    def run_worker(self) -> None:
        for t in self._threads:
            t.start()
        self.worker_ready()
        self._halt.wait()
        for t in self._threads:
            t.join(5)

    def stop_worker(self, timeout: float) -> None:
        self.calls.append(("stop_worker",))
        self._halt.set()
        with self._cv:
            self._cv.notify_all()

    def start_queue(self, queue: str) -> None:
        self.calls.append(("start", queue))
        with self._cv:
            self.active.add(queue)
            self._cv.notify_all()

    def stop_queue(self, queue: str) -> None:
        self.calls.append(("stop", queue))
        with self._cv:
            self.active.discard(queue)

    def set_rate(self, queue: str, qps: float) -> None:
        self.calls.append(("rate", queue, qps))

    def send(self, queue: str, body: str) -> None:
        with self._cv:
            self.inbox[queue].append(body)
            self._cv.notify_all()

    def _work(self) -> None:
        while not self._halt.is_set():
            with self._cv:
                item = next(((q, self.inbox[q].pop(0)) for q in sorted(self.active) if self.inbox.get(q)), None)
                if item is None:
                    self._cv.wait(0.05)
                    continue
            queue, body = item
            out = self.run_message(queue, body)
            self.results[json.loads(body)["extra"]["task_id"]] = out


def _body(x: int, task_id: str) -> str:
    return json.dumps({"x": x, "extra": {"task_id": task_id}})


def test_worker_host_bookkeeping(make_consumer, qname):
    ran: list[tuple[str, int]] = []
    ca = make_consumer(lambda x: ran.append(("a", x)), queue_name=f"{qname}_a", concurrent_num=2)
    cb = make_consumer(lambda x: ran.append(("b", x)), queue_name=f"{qname}_b", concurrent_num=3)
    cc = make_consumer(lambda x: ran.append(("c", x)), queue_name=f"{qname}_c", concurrent_num=1)
    key = ("threadfw", qname)
    host = join_worker_host(key, ThreadFramework, ca)
    assert join_worker_host(key, ThreadFramework, cb) is host  # same process and key: one worker
    wait_until(host.ready.is_set, 10, message="worker ready")
    # both boosters joined within the settle time: one worker with their concurrencies added up
    assert [c for c in host.calls if c[0] == "create"] == [("create", (f"{qname}_a", f"{qname}_b"), 5)]
    host.send(f"{qname}_a", _body(1, "a1"))
    host.send(f"{qname}_b", _body(2, "b2"))
    wait_until(lambda: len(host.results) == 2, 10, message="two messages ran")
    assert host.results["a1"].verb is Verb.ACK and sorted(ran) == [("a", 1), ("b", 2)]

    # a booster joining the running worker is started in it
    assert join_worker_host(key, ThreadFramework, cc) is host
    assert ("start", f"{qname}_c") in host.calls

    # pause and qps are mirrored into the worker
    ca.paused = True
    wait_until(lambda: ("stop", f"{qname}_a") in host.calls, 10, message="pause mirrored")
    ca.paused = False
    wait_until(lambda: host.calls.count(("start", f"{qname}_a")) == 1, 10, message="resume mirrored")
    cb.rate.set_rate(7)
    wait_until(lambda: ("rate", f"{qname}_b", 7.0) in host.calls, 10, message="qps mirrored")

    # leaving: the worker stops taking that queue; a message for a gone booster is rejected
    host.remove(f"{qname}_c")
    assert ("stop", f"{qname}_c") in host.calls
    assert host.run_message(f"{qname}_c", _body(3, "c3")).verb is Verb.REJECT
    host.remove(f"{qname}_b")
    assert not host.stopped.is_set()
    host.remove(f"{qname}_a")  # the last one: the worker stops, its thread ends
    assert host.stopped.is_set() and host.calls[-1] == ("stop_worker",)
    # the next booster gets a new host
    again = join_worker_host(key, ThreadFramework, ca)
    assert again is not host
    again.remove(f"{qname}_a")
    assert again.stopped.is_set()


def test_boosters_that_leave_before_the_worker_starts_start_no_worker(make_consumer, qname):
    ca = make_consumer(lambda x: x, queue_name=qname)
    host = join_worker_host(("threadfw", qname), ThreadFramework, ca)
    host.remove(qname)
    assert host.stopped.wait(5)
    assert not [c for c in host.calls if c[0] == "create"]
    assert worker_host(("threadfw", qname), ThreadFramework) is not host


def test_a_closing_host_is_never_joined(make_consumer, qname):
    ca = make_consumer(lambda x: x, queue_name=f"{qname}_a")
    cb = make_consumer(lambda x: x, queue_name=f"{qname}_b")
    host = join_worker_host(("threadfw", qname), ThreadFramework, ca)
    wait_until(host.ready.is_set, 10, message="worker ready")
    host.shutdown(5)
    assert host.add(cb) is False
    other = join_worker_host(("threadfw", qname), ThreadFramework, cb)
    assert other is not host
    other.remove(f"{qname}_b")


def test_queues_that_change_while_the_worker_starts_are_brought_in_line(make_consumer, qname):
    ca = make_consumer(lambda x: x, queue_name=f"{qname}_a")
    cb = make_consumer(lambda x: x, queue_name=f"{qname}_b")
    gate = threading.Event()

    class SlowStart(ThreadFramework):
        def run_worker(self) -> None:
            gate.wait(10)  # the worker exists but does not take messages yet
            super().run_worker()

    host = join_worker_host(("slow", qname), SlowStart, ca)
    wait_until(lambda: any(c[0] == "create" for c in host.calls), 10, message="worker created")
    assert join_worker_host(("slow", qname), SlowStart, cb) is host  # joins after creation
    host.remove(f"{qname}_a")  # leaves after creation
    gate.set()
    wait_until(host.ready.is_set, 10, message="worker ready")
    assert ("start", f"{qname}_b") in host.calls and ("stop", f"{qname}_a") in host.calls
    host.remove(f"{qname}_b")
    assert host.stopped.is_set()
