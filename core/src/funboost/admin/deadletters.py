"""Dead letters by filter: browse, count, retry (optionally with edited arguments) or delete the messages
of ``<queue>_dlx`` that match a filter.

Brokers have no "peek", so every action scans the dead-letter queue: it takes the messages a batch at a
time, acts on the matching ones (retry: publish a fresh copy to the queue, then ack; delete: ack) and hands
the others back (``requeue``) when the scan ends. A scan covers what was there when it started: it stops
after that many messages, or when a task id comes round a second time. While a scan runs, the messages it
holds are in flight (a crash of the scanning process gives them back through the broker's own mechanism).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from funboost.deadletter import _replayed_envelope
from funboost.message import dumps, loads
from funboost.plugins.broker import Broker, Delivery, OutgoingMessage

ACTIONS = ("list", "count", "retry", "delete")
FETCH_BATCH = 200


@dataclass
class DeadLetterFilter:
    """Which dead letters an action applies to; empty matches all. ``task_ids``: exact ids; ``text``: a
    substring of the message's JSON (arguments, reason); ``reason``: a substring of the dead-letter reason."""

    task_ids: Optional[set[str]] = None
    text: Optional[str] = None
    reason: Optional[str] = None

    def matches(self, env: dict) -> bool:
        raw = env.get("extra")
        extra: dict = raw if isinstance(raw, dict) else {}
        if self.task_ids is not None and str(extra.get("task_id")) not in self.task_ids:
            return False
        if self.reason and self.reason not in str(extra.get("dead_letter_reason", "")):
            return False
        if self.text and self.text not in dumps(env):
            return False
        return True

    def as_dict(self) -> dict:
        return {"task_ids": sorted(self.task_ids) if self.task_ids is not None else None, "text": self.text,
                "reason": self.reason}


@dataclass
class DeadLetterResult:
    action: str
    scanned: int = 0
    matched: int = 0
    messages: list[dict] = field(default_factory=list)  # "list": the matching envelopes (up to the limit)

    def as_dict(self) -> dict:
        return {"action": self.action, "scanned": self.scanned, "matched": self.matched, "messages": self.messages}


def _envelope(d: Delivery) -> dict:
    try:
        env = d.body if isinstance(d.body, dict) else loads(d.body)
    except Exception:
        env = None
    if not isinstance(env, dict):
        return {"raw_body": d.body if isinstance(d.body, str) else repr(d.body), "extra": {}}
    return env


def dead_letter_action(broker: Broker, action: str, flt: DeadLetterFilter, *, limit: Optional[int] = None,
                       edit: Optional[Callable[[dict], dict]] = None, timeout: float = 0.5) -> DeadLetterResult:
    """Apply ``action`` to the dead letters of ``broker``'s queue that match ``flt`` (at most ``limit`` of
    them). ``edit(kwargs) -> kwargs`` changes the arguments of each retried message."""
    if action not in ACTIONS:
        raise ValueError(f"unknown dead-letter action {action!r}; one of {ACTIONS}")
    dlx = broker.dead_letter_broker()
    result = DeadLetterResult(action)
    try:
        budget = dlx.queue_size().ready
    except Exception:
        budget = None
    in_process = type(broker).accepts_payload
    keep: list[Delivery] = []
    deliveries: list[Delivery] = []  # the batch being worked on: held by this scan until acked or kept
    seen: set = set()
    try:
        while budget is None or result.scanned < budget:
            if limit is not None and result.matched >= limit:
                break
            want = FETCH_BATCH if budget is None else min(FETCH_BATCH, budget - result.scanned)
            deliveries = dlx.fetch(want, timeout)
            if not deliveries:
                break
            done: list[Delivery] = []
            out: list[OutgoingMessage] = []
            again = False
            for i, d in enumerate(deliveries):
                env = _envelope(d)
                tid = (env.get("extra") or {}).get("task_id")
                if tid is not None and tid in seen:  # came round again: the scan has covered the queue
                    keep.extend(deliveries[i:])
                    again = True
                    break
                seen.add(tid)
                result.scanned += 1
                hit = flt.matches(env) and (limit is None or result.matched < limit)
                if not hit:
                    keep.append(d)
                    continue
                result.matched += 1
                if action == "list":
                    result.messages.append(env)
                    keep.append(d)
                elif action == "count":
                    keep.append(d)
                elif action == "delete":
                    done.append(d)
                else:  # retry
                    new = _replayed_envelope(env)
                    if edit is not None:
                        kwargs = edit({k: v for k, v in new.items() if k != "extra"})
                        new = {**kwargs, "extra": new["extra"]}
                    out.append(OutgoingMessage(body="" if in_process else dumps(new), task_id=str(tid or ""),
                                               payload=new if in_process else None))
                    done.append(d)
            if out:
                broker.publish(out)  # published before the dead letters are acked: a crash duplicates, never loses
            if done:
                dlx.ack(done)
            deliveries = []  # settled: each one acked or in ``keep``
            if again:
                break
    finally:
        # whatever failed (a filter, an edit, the broker), hand back every message this scan holds: the kept
        # ones and the rest of an unsettled batch; otherwise they stay in flight, hidden, while this process runs
        kept = {id(d) for d in keep}
        back = keep + [d for d in deliveries if id(d) not in kept]
        if back:
            dlx.requeue(back)
    return result
