"""Bad input (issue 19, item 4): malformed messages interleaved with good ones on a real broker. The
consumer must survive all of them (good tasks published after each bad one still run), and every bad one
must arrive in ``<queue>_dlx`` whole, with a reason. Nothing may be dropped while a log says it was kept."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest

from funboost import BoosterParams, boost
from funboost.plugins.broker import Delivery, OutgoingMessage

from .brokers import broker_options, require_broker
from .malformed import dead_letter_identity, expected_identities, malformed_bodies
from .sizes import SIZE
from .report import record


def _body_dict(d: Delivery) -> dict:
    b = d.body
    if isinstance(b, dict):
        return b
    return json.loads(bytes(b).decode("utf-8") if isinstance(b, (bytes, bytearray)) else b)


# kinds that store a message as text in a SQL column: a producer cannot put bytes that are not UTF-8 there
# at all (the database refuses them, and so does the broker's publish), so that case cannot arrive
TEXT_COLUMN_KINDS = {"postgres", "sqlalchemy"}
# kinds whose server caps a message's size (Kafka's max request size, NATS's max_payload, both ~1 MB by
# default): the publish of the 10 MB bodies must fail with an error that says so; they never arrive
SIZE_CAPPED_KINDS = {"kafka", "nats_jetstream"}
OVERSIZE_LABELS = {"large payload", "large non-JSON"}


@pytest.mark.parametrize("kind", ["sqlite", "redis_ack_able", "rabbitmq", "memory", "redis_stream", "redis_priority", "kafka",
                                  "postgres", "sqlalchemy", "nats_jetstream"])
def test_malformed_messages_are_dead_lettered_and_good_ones_run(kind, qname, sqlite_dir):
    options = broker_options(kind, sqlite_dir)
    require_broker(kind, options)
    done: Counter = Counter()
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=qname, broker_kind=kind, broker_exclusive_config=options, concurrent_num=8,
                         state_backend="memory", log_to_console=False, max_retry_times=0,
                         is_push_to_dlx_queue_when_retry_max_times=True))
    def work(i: int) -> None:
        # argument types are not checked before the call (the envelope has no schema): a wrong type
        # fails in the function, and with is_push_to_dlx_queue_when_retry_max_times the message is
        # dead-lettered with the exception as its reason
        n = i + 0
        with lock:
            done[n] += 1

    broker = work.broker
    dlx = broker.dead_letter_broker()
    dlx.fetch(1, 0.05)  # brokers that declare on first use: the dead-letter queue exists before it fills
    bad = [(label, body) for label, body in malformed_bodies(SIZE.bad_messages, SIZE.large_payload_bytes)
           if not (kind in TEXT_COLUMN_KINDS and label == "invalid UTF-8")]
    good = list(range(SIZE.good_messages))
    # interleave at random (fixed seed: a failure can be replayed), always ending on a good one so that
    # the last thing the consumer proves is that it still runs tasks after all the bad input
    order = [("bad", b) for b in bad] + [("good", g) for g in good[:-1]]
    random.Random(19).shuffle(order)
    order.append(("good", good[-1]))
    published_bad = []
    refused: list[str] = []  # publishes a size-capped server refused
    started = time.monotonic()
    try:
        work.consume()
        for what, item in order:
            if what == "good":
                work.push(item)
                continue
            label, body = item
            try:
                broker.publish([OutgoingMessage(body=body, task_id="")])  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - only the size cap of a capped kind is an answer
                if not (kind in SIZE_CAPPED_KINDS and label in OVERSIZE_LABELS and len(body) > 1_000_000):
                    raise
                refused.append(f"{type(exc).__name__}: {exc}")
                continue
            published_bad.append(body)
        deadline = time.monotonic() + 120
        while len(done) < len(good) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(done) == set(good), f"good tasks missing: {sorted(set(good) - set(done))[:20]}"
        want = expected_identities(published_bad)
        got: list[dict] = []
        deadline = time.monotonic() + 120
        while len(got) < len(published_bad) and time.monotonic() < deadline:
            deliveries = dlx.fetch(100, 0.5)
            got.extend(_body_dict(d) for d in deliveries)
            if deliveries:
                dlx.ack(deliveries)
        recovered = time.monotonic() - started
    finally:
        work.stop_consume(10)
        _cleanup(kind, broker, dlx)
    missing = want - Counter(dead_letter_identity(g) for g in got)
    assert not missing, f"{sum(missing.values())} malformed messages never reached {qname}_dlx: " + \
        ", ".join(k[:80] for k in list(missing)[:5])
    assert len(got) == len(published_bad), f"{len(got)} dead letters for {len(published_bad)} bad messages"
    assert all(g["extra"].get("dead_letter_reason") for g in got), "a dead letter without a reason"
    assert all(c == 1 for c in done.values()), "a good task ran twice on a broker nobody killed"
    assert all("size" in r.lower() or "payload" in r.lower() for r in refused), refused
    record("bad_input", kind=kind, bad=len(published_bad), refused_at_publish=len(refused), good=len(good), lost=0,
           duplicates=sum(c - 1 for c in done.values()), seconds=round(recovered, 1))


def _cleanup(kind: str, broker, dlx) -> None:
    if kind == "rabbitmq":
        broker.delete_queues()
        return
    for b in (broker, dlx):
        try:
            b.purge()
        except Exception:
            pass
