"""Work queue vs broadcast: a work queue gives each message to exactly one consumer; a broadcast kind
gives every message to every live consumer."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from funboost.testing.contract.base import ContractBase, body_x, fetch_until, wait_until
from funboost.testing.requirements import requires

#: consumers and messages of the concurrent work-queue test
CONCURRENT_CONSUMERS = 4
CONCURRENT_MESSAGES = 200


class DeliveryModeTests:
    @requires(broadcast=False)
    def test_work_queue_delivers_each_message_once(self, make_broker, message, settings):
        a, b = make_broker(), make_broker()
        a.fetch(1, 0.05)
        b.fetch(1, 0.05)
        a.publish([message(i) for i in range(20)])
        got: dict = {}
        deadline = time.monotonic() + settings["consumer_ready_timeout"] + 20
        counted_empty_since = None  # both queue sizes 0 and nothing fetched since then
        while sum(len(v) for v in got.values()) < 20 and time.monotonic() < deadline:
            before = sum(len(v) for v in got.values())
            for name, consumer in (("a", a), ("b", b)):
                batch = consumer.fetch(5, 0.2)
                assert len(batch) <= 5, \
                    f"fetch(max_count=5) returned {len(batch)} deliveries (never more than max_count)"
                got.setdefault(name, []).extend(batch)
                consumer.ack(batch)
            if not any(got.values()) or sum(len(v) for v in got.values()) >= 20:
                continue
            if sum(len(v) for v in got.values()) > before:
                counted_empty_since = None
            if a.capabilities.queue_size == "exact" and a.queue_size().ready == 0 == b.queue_size().ready:
                # nothing left to fetch: whatever is missing was lost (asserted below). Judged after 2 s of
                # empty counts and empty fetches: a message the server already sent to a consumer that has
                # not read it off its socket yet (RabbitMQ's push prefetch on a loaded host) is counted by
                # neither side for a moment (failed once in CI: 16 of 20 "missing").
                now = time.monotonic()
                if counted_empty_since is None:
                    counted_empty_since = now
                elif now - counted_empty_since >= 2.0:
                    break
            else:
                counted_empty_since = None
        xs = sorted(body_x(d) for v in got.values() for d in v)
        twice = sorted(x for x, n in Counter(xs).items() if n > 1)
        missing = sorted(set(range(20)) - set(xs))
        assert not twice, (f"work queue: fetch() of two consumers handed messages {twice} to both (each message "
                           f"must go to exactly one consumer); got {xs}")
        assert not missing, (f"work queue: messages {missing} of 20 published never reached either consumer "
                             f"(lost by publish or fetch); got {xs}")
        left = a.fetch(5, 0.3) + b.fetch(5, 0.3)
        assert left == [], (f"work queue: {len(left)} message(s) were delivered again after every message had been "
                            f"fetched and acked (ack must be final): {[body_x(d) for d in left]}")

    @requires(broadcast=False)
    def test_concurrent_consumers_get_each_message_once(self, make_broker, message, settings):
        """Several consumers of one queue (each its own broker instance, in its own thread) fetch and ack at
        the same time: each message goes to exactly one of them while they all live. A claim that is not
        atomic (read which messages are free, then mark them taken without checking that they still are)
        hands the same message to two consumers that fetch at the same moment. Every consumer joins
        (fetches once) before anything is published, so that consumer groups (Kafka) and shared
        subscriptions (MQTT) are settled: a rebalance is not what is tested here."""
        pub = make_broker()  # publishes, and purges the queue at the end
        consumers = [make_broker() for _ in range(CONCURRENT_CONSUMERS)]
        got: list[list[Any]] = [[] for _ in consumers]  # per consumer: x of each delivery
        errors: list[str] = []
        joined = [threading.Event() for _ in consumers]
        stop = threading.Event()
        ready_timeout = settings["consumer_ready_timeout"] + 20

        def run(i: int) -> None:
            consumer = consumers[i]
            try:
                while not stop.is_set():
                    batch = consumer.fetch(10, 0.2)
                    joined[i].set()
                    if len(batch) > 10:
                        errors.append(f"fetch(max_count=10) returned {len(batch)} deliveries")
                    got[i].extend(body_x(d) for d in batch)
                    if batch:
                        consumer.ack(batch)
            except Exception as exc:  # reported by the test
                errors.append(f"consumer {i}: {type(exc).__name__}: {exc}")
            finally:
                joined[i].set()
                try:  # all consumers leave at once (a consumer group rebalances once, not once per member)
                    consumer.close()
                except Exception:
                    pass

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(consumers))]
        for t in threads:
            t.start()
        try:
            for i, ev in enumerate(joined):
                assert ev.wait(ready_timeout), \
                    f"consumer {i}: its first fetch(10, 0.2) did not return within {ready_timeout}s"
            time.sleep(0.5)  # the last member's join settles the group
            pub.publish([message(i) for i in range(CONCURRENT_MESSAGES)])

            def all_seen() -> bool:
                return len({x for xs in got for x in xs}) >= CONCURRENT_MESSAGES or bool(errors)
            try:
                wait_until(all_seen, ready_timeout, interval=0.05,
                           message=f"{CONCURRENT_MESSAGES} messages fetched by {len(consumers)} concurrent consumers")
            except AssertionError:
                pass  # what is missing is reported below
            time.sleep(0.5)  # a second copy handed out late is still seen
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, "; ".join(errors)
        counts = Counter(x for xs in got for x in xs)
        twice = {x: [i for i, xs in enumerate(got) for y in xs if y == x] for x, n in counts.items() if n > 1}
        assert not twice, (
            f"work queue: fetch() handed {len(twice)} of {CONCURRENT_MESSAGES} messages to more than one living "
            f"consumer ({len(consumers)} broker instances fetching at the same time; message x: consumers that got "
            f"it): {dict(sorted(twice.items())[:10])}{' ...' if len(twice) > 10 else ''}. The claim in fetch() "
            f"must be atomic (e.g. UPDATE ... WHERE consumer IS NULL, SELECT ... FOR UPDATE SKIP LOCKED, a "
            f"server-side pop)")
        missing = sorted(set(range(CONCURRENT_MESSAGES)) - set(counts))
        assert not missing, (f"work queue: {len(missing)} of {CONCURRENT_MESSAGES} messages never reached any of "
                             f"{len(consumers)} concurrent consumers within {ready_timeout}s: {missing[:20]}")

    @requires("broadcast")
    def test_broadcast_reaches_every_consumer(self, make_broker, message):
        a, b = make_broker(), make_broker()
        a.fetch(1, 0.2)
        b.fetch(1, 0.2)  # subscribe
        pub = make_broker()
        pub.publish([message(1)])
        for name, sub in (("first", a), ("second", b)):
            try:
                fetch_until(sub, 1)
            except AssertionError as exc:
                raise AssertionError(f"broadcast: the {name} of two subscribed consumers did not get the message "
                                     f"published (every live consumer must get every message): {exc}") from exc

    @requires("broadcast")
    def test_broadcast_consume_then_push_through_boost(self, broker_cls, options_raw, queue_name, settings):
        """``consume()`` returns once the consumer listens: a broadcast kind keeps nothing for a consumer
        that is not listening yet, so tasks pushed right after ``consume()`` must still reach it (the
        hello-world of a broadcast kind)."""
        from funboost import BoosterParams, boost
        done: list[int] = []
        lock = threading.Lock()

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            with lock:
                done.append(x)

        try:
            work.consume()
            for i in range(3):
                work.push(i)
            wait_until(lambda: len(done) >= 3, settings["consumer_ready_timeout"] + 10,
                       message="3 tasks pushed right after consume() done")
        finally:
            work.stop_consume(10)
        assert sorted(done) == [0, 1, 2], (f"broadcast: 3 tasks pushed right after consume() ran as {sorted(done)} "
                                           f"(each exactly once expected)")


class TestDeliveryMode(DeliveryModeTests, ContractBase):
    pass
