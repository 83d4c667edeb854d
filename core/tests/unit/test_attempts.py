"""Unit tests of the runner's attempt bookkeeping (``_Attempts``): how many tries a task gets, what each
failure decides (retry now, retry after a backoff, stop with an outcome), and what the status says."""
import json
import uuid

import pytest

from funboost import BoosterParams, boost
from funboost.engine.consumer import Consumer
from funboost.engine.runner import _Attempts
from funboost.enums import RunStatus
from funboost.exceptions import ExceptionForPushToDlxqueue, ExceptionForRequeue
from funboost.plugins.broker import Delivery


def make_attempts(extra=None, **params):
    @boost(BoosterParams(queue_name=f"attempts_{uuid.uuid4().hex[:8]}", broker_kind="memory",
                         state_backend="memory", log_to_console=False, **params))
    def f(x):
        return x

    consumer = Consumer(f)
    body = {"x": 1, "extra": {"task_id": uuid.uuid4().hex, "publish_time": 0.0, **(extra or {})}}
    task = consumer.prepare(Delivery(body=json.dumps(body)))
    assert task is not None
    return consumer, _Attempts(consumer.runner, task)


def run_until_stop(att, exc):
    """Fail every attempt with ``exc``; return the delays the runner chose between attempts."""
    delays = []
    while True:
        att.begin()
        d = att.failed(exc)
        if d is None:
            return delays
        delays.append(d)


def test_max_retry_times_gives_one_plus_n_attempts_then_finish():
    consumer, att = make_attempts(max_retry_times=3, is_push_to_dlx_queue_when_retry_max_times=False)
    try:
        delays = run_until_stop(att, ValueError("boom"))
        assert att.tries == 4 and len(delays) == 3
        assert att.outcome is RunStatus.FINISH
        assert att.status.run_times == 4 and att.status.success is False
        assert att.status.exception_type == "ValueError" and att.status.exception_msg == "boom"
    finally:
        consumer.stop(1)


def test_exhausted_retries_dead_letter_when_configured():
    consumer, att = make_attempts(max_retry_times=1, is_push_to_dlx_queue_when_retry_max_times=True)
    try:
        run_until_stop(att, ValueError("boom"))
        assert att.tries == 2 and att.outcome is RunStatus.DEAD_LETTERED
    finally:
        consumer.stop(1)


def test_per_message_max_retry_times_overrides_the_queue():
    consumer, att = make_attempts(extra={"max_retry_times": 0}, max_retry_times=5)
    try:
        run_until_stop(att, ValueError("boom"))
        assert att.tries == 1
    finally:
        consumer.stop(1)


@pytest.mark.parametrize("exc, outcome", [(ExceptionForRequeue("again"), RunStatus.REQUEUED),
                                          (ExceptionForPushToDlxqueue("bad"), RunStatus.DEAD_LETTERED)])
def test_control_exceptions_stop_at_once(exc, outcome):
    consumer, att = make_attempts(max_retry_times=5)
    try:
        assert run_until_stop(att, exc) == []
        assert att.tries == 1 and att.outcome is outcome
    finally:
        consumer.stop(1)


def test_success_after_failure_clears_the_error():
    consumer, att = make_attempts(max_retry_times=2)
    try:
        att.begin()
        assert att.failed(ValueError("first")) is not None
        att.begin()
        att.succeeded(42)
        st = att.status
        assert st.success is True and st.result == 42 and st.run_times == 2
        assert st.exception_type is None and st.exception_msg is None
    finally:
        consumer.stop(1)


def test_earlier_deliveries_count_in_the_attempt_number():
    consumer, att = make_attempts(extra={"_advanced_retry_count": 2}, max_retry_times=1)
    try:
        att.begin()
        assert att.attempt == 3 and att.status.run_times == 3
    finally:
        consumer.stop(1)


def test_backoff_in_sleep_mode_grows_per_attempt():
    consumer, att = make_attempts(max_retry_times=3, is_using_advanced_retry=True,
                                  advanced_retry_config={"retry_mode": "sleep", "retry_base_interval": 0.5,
                                                         "retry_multiplier": 2.0, "retry_max_interval": 1.5,
                                                         "retry_jitter": False})
    try:
        assert run_until_stop(att, ValueError("boom")) == [0.5, 1.0, 1.5]
    finally:
        consumer.stop(1)


def test_backoff_in_requeue_mode_frees_the_worker():
    consumer, att = make_attempts(max_retry_times=3, is_using_advanced_retry=True,
                                  advanced_retry_config={"retry_mode": "requeue", "retry_base_interval": 2.0,
                                                         "retry_jitter": False})
    try:
        assert run_until_stop(att, ValueError("boom")) == []
        assert att.tries == 1 and att.outcome is RunStatus.RETRY_LATER and att.retry_delay == 2.0
    finally:
        consumer.stop(1)


@pytest.mark.parametrize("max_retry", [1, 3])
def test_requeue_mode_counts_the_attempts_of_earlier_deliveries(max_retry):
    """Each retry in requeue mode is a new delivery (its count in ``_advanced_retry_count``): the last one
    finishes instead of being republished again (every copy used to get a fresh set of attempts: endless)."""
    retry = {"retry_mode": "requeue", "retry_base_interval": 0.1, "retry_jitter": False}
    outcomes = []
    for earlier in range(max_retry + 1):  # the first delivery, then one per retry
        consumer, att = make_attempts({"_advanced_retry_count": earlier} if earlier else None,
                                      max_retry_times=max_retry, is_using_advanced_retry=True,
                                      advanced_retry_config=retry)
        try:
            assert run_until_stop(att, ValueError("boom")) == []
            outcomes.append(att.outcome)
        finally:
            consumer.stop(1)
    assert outcomes == [RunStatus.RETRY_LATER] * max_retry + [RunStatus.FINISH], outcomes
