"""Through the engine: ``@boost`` end to end, malformed messages dead-lettered while the consumer keeps
running, ``get_message_count`` and ``clear``; and the booster's life cycle: consuming again after
``stop_consume``, ``multi_process_consume``, a consumer process stopped with SIGTERM."""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

from funboost.plugins.broker import Broker, OutgoingMessage
from funboost.testing.contract.base import (ContractBase, MessagesLost, body_text, fetch_until, same_value,
                                            wait_until)
from funboost.testing.requirements import requires


def wait_for_work(predicate: Callable[[], Any], broker: Broker, timeout: float, message: str) -> None:
    """Like ``wait_until``; fails early when a broker with exact sizes and in-flight counts reports
    nothing ready and nothing in flight for two seconds (what is missing was lost)."""
    caps = broker.capabilities
    can_tell = caps.queue_size == "exact" and caps.in_flight_count
    deadline = time.monotonic() + timeout
    idle_since = None
    while not predicate():
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        if can_tell:
            size = broker.queue_size()
            if size.ready == 0 and size.in_flight == 0 and not size.delayed:
                idle_since = idle_since or now
                if now - idle_since >= 2.0 and not predicate():
                    raise MessagesLost(f"the queue is empty and nothing is in flight, still waiting for {message}")
            else:
                idle_since = None
        time.sleep(0.02)


@requires(broadcast=False)
class EngineTests:
    def test_end_to_end_through_boost(self, broker_cls, options_raw, queue_name, settings):
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
            wait_for_work(lambda: len(done) == 30, work.broker, settings["consumer_ready_timeout"] + 20,
                          "30 tasks done")
        finally:
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()
        twice = sorted(x for x, n in done.items() if n > 1)
        assert sorted(done) == list(range(30)) and not twice, (
            f"@boost end to end: 30 tasks pushed to one consumer, each must run once; missing "
            f"{sorted(set(range(30)) - set(done))}, ran more than once {twice}")

    @requires("dead_letter")
    def test_malformed_message_is_dead_lettered_and_consumer_survives(self, broker_cls, options_raw, queue_name,
                                                                      make_broker, settings):
        """Bad input gets a clear error or the dead-letter queue: a body that is not a JSON object may be
        refused by ``publish`` (an exception, nothing enqueued) or accepted and then dead-lettered by the
        engine; arguments that do not fit the function may be refused by ``publish`` when the consumer itself
        answers the publish (a serving transport: the error must name the arguments), else are dead-lettered;
        per-message options of the wrong type are always dead-lettered."""
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
            expected = []
            for body, reason in (("this is not json", "not valid JSON"), (json.dumps([1, 2, 3]), "JSON object")):
                try:
                    raw.publish([OutgoingMessage(body=body, task_id="bad")])
                except Exception as exc:  # refused at the door: the error must say why
                    assert str(exc), f"publish refused {body!r} without a message"
                else:
                    expected.append(reason)
            try:
                raw.publish([OutgoingMessage(body=json.dumps({"nope": 1}), task_id="bad3")])
            except Exception as exc:  # a serving consumer answered the publish itself
                assert "argument" in str(exc), f"publish refused arguments that do not fit with {exc!r}"
            else:
                expected.append("arguments do not fit")
            # per-message options of the wrong type (another language's client): dead-lettered once with the
            # option named, never retried in the engine or handed back over and over
            for n, (key, value) in enumerate((("eta", "tomorrow"), ("max_retry_times", "lots"),
                                              ("function_timeout", [1]))):
                body = json.dumps({"x": n, "extra": {"task_id": f"bad-option-{n}", key: value}})
                raw.publish([OutgoingMessage(body=body, task_id=f"bad-option-{n}")])
                expected.append(f"extra.{key}")
            work.push(42)
            wait_for_work(lambda: done == [42], work.broker, settings["consumer_ready_timeout"] + 20, "valid task ran")
            got = fetch_until(dlx, len(expected), timeout=settings["consumer_ready_timeout"] + 20)
            reasons = sorted(json.loads(body_text(d))["extra"]["dead_letter_reason"] for d in got)
            for reason in expected:
                assert any(reason in r for r in reasons), (
                    f"dead_letter through the engine: no message in the dead-letter queue has a "
                    f"dead_letter_reason mentioning {reason!r}; reasons found: {reasons}")
            dlx.ack(got)
        finally:
            work.stop_consume(10)

    def test_booster_message_count_and_clear(self, broker_cls, options_raw, queue_name):
        from funboost import BoosterParams, boost

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            pass

        caps = broker_cls.capabilities
        if caps.queue_size == "none":
            count = work.get_message_count()
            assert count == -1, f"queue_size='none': get_message_count() must be -1 (unknown), got {count}"
            return
        work.broker.fetch(1, 0.05)  # consumer-group brokers: be a member before counting
        for i in range(4):
            work.push(i)
        if caps.queue_size == "exact":
            wait_until(lambda: work.get_message_count() == 4, 5, message="booster.get_message_count() == 4 after pushing 4 (queue_size='exact')")
        else:
            wait_until(lambda: work.get_message_count() >= 1, 15, message="booster.get_message_count() >= 1 after pushing 4 (queue_size='approximate')")
        if caps.purge:
            work.clear()
            wait_until(lambda: work.get_message_count() == 0, 15, message="booster.get_message_count() == 0 after clear() (purge)")


    def test_consume_again_after_stop_in_the_same_process(self, broker_cls, options_raw, queue_name, settings):
        """``stop_consume`` then ``consume`` on the same booster: the second consumer gets the new tasks (a
        worker, server or subscription the first one left behind must not swallow them)."""
        from funboost import BoosterParams, boost
        done: list[int] = []

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=2, state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            done.append(x)

        wait = settings["consumer_ready_timeout"] + 20
        try:
            for round_ in (1, 2):
                work.consume()
                work.push(round_)
                wait_for_work(lambda: round_ in done, work.broker, wait, f"task {round_} ran (consume #{round_})")
                summary = work.stop_consume(10)
                assert summary and not summary["unfinished"], f"stop_consume #{round_}: {summary}"
        finally:
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()
        assert sorted(set(done)) == [1, 2], (f"consume() after stop_consume(): tasks 1 (first consume) and 2 "
                                             f"(second consume) must both run; ran {done}")

    def test_arguments_and_results_round_trip_exactly(self, broker_cls, options_raw, queue_name, settings):
        """What the function receives is what was pushed, and ``AsyncResult.get()`` is what it returned:
        text beyond ASCII (accents, CJK, emoji, quotes, backslashes, control characters, NUL), integers
        beyond 64 bits, NaN and infinities, floats near the limits, nested containers, empty values."""
        from funboost import BoosterParams, boost
        values = {
            "text": "h\u00e9llo \u2713 \u4f60\u597d \U0001F600 \"q\" \\ \n\t\r \x00 \x7f \u2028",
            "big": 2**70, "negative": -(2**63), "nan": float("nan"), "inf": float("-inf"),
            "small": 5e-324, "large": 1.7976931348623157e308, "nested": {"k": [1, 2.5, None, True, {"\u00fc": []}]},
            "empty_text": "", "empty_list": [], "empty_dict": {}, "false": False, "none": None,
        }

        got: dict[str, Any] = {}

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=4, state_backend="memory", log_to_console=False, is_using_rpc_mode=True,
                             max_retry_times=0))
        def echo(name: str, value: Any) -> Any:
            got[name] = value
            return value

        timeout = settings["consumer_ready_timeout"] + 30
        try:
            echo.consume()
            results = {name: echo.push(name, value) for name, value in values.items()}
            returned = {name: r.get(timeout) for name, r in results.items()}
        finally:
            echo.stop_consume(10)
            if broker_cls.capabilities.purge:
                echo.clear()
        wrong_in = {k: (v, got.get(k, "<not run>")) for k, v in values.items() if not same_value(v, got.get(k, object()))}
        wrong_out = {k: (v, returned[k]) for k, v in values.items() if not same_value(v, returned[k])}
        assert not wrong_in, f"arguments changed on the way (sent, received): {wrong_in}"
        assert not wrong_out, f"results changed on the way back (returned, got): {wrong_out}"

    @requires("cross_process", needs_serving_consumer=False)
    def test_multi_process_consume_spreads_tasks_over_the_processes(self, broker_cls, options_raw, queue_name,
                                                                      settings, tmp_path):
        """``multi_process_consume(2)``: two child processes consume the queue, both run tasks, and no task
        runs in both. Tasks are pushed until both children ran one (a child may need a while to join, e.g. a
        consumer-group rebalance), each a little slow so that one child cannot take them all; then, with
        both children consuming, another batch is pushed: each of those runs exactly once (a fetch whose
        claim is not atomic hands one message to both processes)."""
        import uuid

        from funboost import BoosterParams, boost
        marks = tmp_path / "ran"  # a folder of its own: a kind's fixtures may keep files in tmp_path
        marks.mkdir()
        settled_batch = 30

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=1, state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            (marks / f"{x}-{os.getpid()}-{uuid.uuid4().hex[:8]}").touch()  # one file per run
            time.sleep(0.05)

        def runs() -> list[tuple[int, str]]:
            return [(int(p.name.split("-")[0]), p.name.split("-")[1]) for p in marks.iterdir()]

        def pids() -> set[str]:
            return {pid for _, pid in runs()}

        procs = work.multi_process_consume(2)
        try:
            deadline = time.monotonic() + settings["consumer_ready_timeout"] + 40
            i = 0
            while len(pids()) < 2:
                assert time.monotonic() < deadline, (f"multi_process_consume(2): only processes {sorted(pids())} "
                                                     f"ran tasks ({i} pushed); both should consume the queue")
                assert all(p.is_alive() for p in procs), "multi_process_consume(2): a consumer process died"
                work.push(i)
                i += 1
                time.sleep(0.05)
            # both children consume (a consumer group has settled): each of these runs exactly once
            settled = list(range(i, i + settled_batch))
            for x in settled:
                work.push(x)
            wait = settings["consumer_ready_timeout"] + 30

            def settled_done() -> bool:
                return set(settled) <= {x for x, _ in runs()}
            wait_for_work(settled_done, work.broker, wait, f"{settled_batch} tasks pushed while both processes "
                                                            f"consumed ran")
            time.sleep(0.5)  # a second run of one of them would show by now
            assert all(p.is_alive() for p in procs), "multi_process_consume(2): a consumer process died"
            by_x: dict[int, list[str]] = {}
            for x, pid in runs():
                if x in settled:
                    by_x.setdefault(x, []).append(pid)
            twice = {x: sorted(ps) for x, ps in sorted(by_x.items()) if len(ps) > 1}
            assert not twice, (f"work queue: {len(twice)} of {settled_batch} tasks ran more than once while both "
                               f"consumer processes lived (task x: pids that ran it): {twice}. fetch() handed one "
                               f"message to two living consumers: its claim must be atomic")
        finally:
            # SIGTERM: each child stops gracefully (leaves its consumer group, hands back what it holds), so
            # that clear() below finds no member of the queue left behind
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join(10)
            assert all(p.exitcode == 0 for p in procs), \
                f"consumer processes stopped with SIGTERM exited with {[p.exitcode for p in procs]} (0 expected)"
            if broker_cls.capabilities.purge:
                work.clear()
        assert str(os.getpid()) not in pids(), "multi_process_consume(2): the parent process ran tasks itself"
        assert pids() == {str(p.pid) for p in procs}, \
            (f"multi_process_consume(2): tasks ran in processes {sorted(pids())}, not in its children "
             f"{[p.pid for p in procs]}")

    @requires("at_least_once", "cross_process", needs_serving_consumer=False)
    def test_sigterm_finishes_the_running_task_and_loses_nothing(self, broker_cls, reclaim_options_raw, queue_name,
                                                                  settings, tmp_path):
        """A consumer process stopped with SIGTERM (a deploy, ``docker stop``) finishes the task it runs,
        exits 0, and leaves every other message to the next consumer: each task id ends up done, none cut
        off halfway. Messages the stopped process had fetched without starting come back at once where
        the kind hands them back (``native_requeue``), else when the broker sees that their holder is gone
        (``fast_reclaim_options``)."""
        from funboost import BoosterParams, boost
        marks = tmp_path / "ran"
        marks.mkdir()
        total = 6

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind,
                             broker_exclusive_config=reclaim_options_raw, concurrent_num=1, state_backend="memory",
                             log_to_console=False))
        def work(x: int) -> None:
            (marks / f"start-{x}-{os.getpid()}").touch()
            time.sleep(0.5)
            (marks / f"done-{x}-{os.getpid()}").touch()

        def seen(what: str, pid: "int | None" = None) -> set[int]:
            out = set()
            for p in marks.iterdir():
                step, x, by = p.name.split("-")
                if step == what and (pid is None or int(by) == pid):
                    out.add(int(x))
            return out

        for i in range(total):
            work.push(i)
        [child] = work.multi_process_consume(1)
        try:
            wait_until(lambda: seen("start", child.pid), settings["consumer_ready_timeout"] + 30,
                       message="the consumer process started a task")
            child.terminate()
            child.join(60)
            assert child.exitcode == 0, \
                f"a consumer process stopped with SIGTERM exited with {child.exitcode} (0 expected)"
            started, done = seen("start", child.pid), seen("done", child.pid)
            assert started and started <= done, f"a running task was cut off: started {started}, done {done}"
            work.consume()
            wait_until(lambda: seen("done") == set(range(total)),
                       settings["redelivery_timeout"] + settings["consumer_ready_timeout"] + 30,
                       message=f"all {total} tasks done (done: {sorted(seen('done'))})")
            again = done & seen("start", os.getpid())
            assert not again, (f"tasks {sorted(again)} finished in the stopped process and ran again in the next "
                               f"consumer: a graceful stop must settle (ack) the tasks it let finish")
        finally:
            if child.is_alive():
                child.kill()
                child.join(10)
            work.stop_consume(10)
            if broker_cls.capabilities.purge:
                work.clear()

class TestEngine(EngineTests, ContractBase):
    pass
