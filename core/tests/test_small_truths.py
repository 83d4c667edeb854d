"""Issue 23 item 8: where a failing task went is logged; a replayed dead letter keeps its reason."""
from __future__ import annotations

import json
import logging

import pytest

from funboost import BoosterParams, boost
from funboost.testing import body_text, fetch_until, wait_until


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("to_dlx", [True, False])
def test_task_failing_every_attempt_logs_where_it_went(qname, to_dlx):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         max_retry_times=1, is_push_to_dlx_queue_when_retry_max_times=to_dlx))
    def needs_int(x):
        return x + 1  # a str argument fails at run time, on every attempt

    h = _Collect()
    needs_int.logger.addHandler(h)
    needs_int.consume()
    try:
        r = needs_int.push("not a number")
        wait_until(lambda: any("failed all 2 attempts" in line for line in h.lines), 10,
                   message="final log line")
        line = next(line for line in h.lines if "failed all 2 attempts" in line)
        assert r.task_id in line
        assert (f"{qname}_dlx" in line) if to_dlx else ("dropped" in line)
    finally:
        needs_int.stop_consume(5)


def test_replayed_dead_letter_keeps_its_reason_in_history(qname):
    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         max_retry_times=0, is_push_to_dlx_queue_when_retry_max_times=True))
    def always_fails(x):
        raise ValueError(f"bad {x}")

    always_fails.consume()
    dlx = always_fails.broker.dead_letter_broker()
    try:
        always_fails.push(1)
        wait_until(lambda: dlx.queue_size().ready == 1, 10, message="first dead letter")
        assert always_fails.replay_dead_letters() == 1
        wait_until(lambda: dlx.queue_size().ready == 1 and always_fails.get_message_count() == 0, 10,
                   message="the replayed message failed again")
    finally:
        always_fails.stop_consume(5)
    d = fetch_until(dlx, 1)[0]
    extra = json.loads(body_text(d))["extra"]
    assert "ValueError: bad 1" in extra["dead_letter_reason"]
    history = extra["dead_letter_history"]
    assert len(history) == 1 and "ValueError: bad 1" in history[0]["reason"]
    dlx.ack([d])
