"""Dead-letter replay: moving messages from ``<queue>_dlx`` back to their queue."""
from __future__ import annotations

from typing import Any, Optional

from funboost.message import dumps, loads
from funboost.plugins.broker import Broker, OutgoingMessage

# envelope keys a replay resets: the message starts over with fresh retry / requeue counters
_RESET_ON_REPLAY = ("dead_letter_reason", "dead_letter_time", "_requeue_count", "_advanced_retry_count")


def _replayed_envelope(body: Any) -> dict:
    env = dict(body if isinstance(body, dict) else loads(body))
    extra = dict(env.get("extra") or {})
    # the reason stays in the message's history (a replayed message that fails again says why it failed
    # both times); only the live fields and counters are reset
    history = list(extra.get("dead_letter_history") or [])
    history.append({"reason": extra.get("dead_letter_reason"), "time": extra.get("dead_letter_time")})
    extra["dead_letter_history"] = history
    for key in _RESET_ON_REPLAY:
        extra.pop(key, None)
    extra["replayed"] = int(extra.get("replayed", 0)) + 1
    env["extra"] = extra
    return env


def replay_dead_letters(broker: Broker, max_count: Optional[int] = None, timeout: float = 1.0) -> int:
    """Move messages from the dead-letter queue of ``broker``'s queue back to that queue (their retry
    counters reset, ``extra.replayed`` counted up). Without ``max_count``, only what is there when the
    call starts: a message that fails again must not loop back into this call. Returns how many moved."""
    dlx = broker.dead_letter_broker()
    in_process = type(broker).accepts_payload
    if max_count is None:
        max_count = dlx.queue_size().ready
    moved = 0
    seen: set = set()
    while max_count is None or moved < max_count:
        want = 100 if max_count is None else min(100, max_count - moved)
        deliveries = dlx.fetch(want, timeout)
        if not deliveries:
            break
        out = []
        again = []
        for d in deliveries:
            env = _replayed_envelope(d.body)
            task_id = env["extra"].get("task_id")
            if task_id is not None and task_id in seen:  # came round again within this call: stop here
                again.append(d)
                continue
            seen.add(task_id)
            out.append(OutgoingMessage(body="" if in_process else dumps(env), task_id=str(task_id or ""),
                                       payload=env if in_process else None))
        if out:
            broker.publish(out)
            dlx.ack([d for d in deliveries if d not in again])
        if again:
            dlx.requeue(again)
            break
        moved += len(out)
    return moved
