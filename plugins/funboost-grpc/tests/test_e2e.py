"""Through the engine: @boost with broker_kind="grpc", push and sync_call (core's scenario)."""
from funboost.testing.serving import (assert_a_call_is_answered_by_the_run_after_a_requeue, assert_pushes_run,
                                      assert_sync_call_and_remote_error, serving_divide)

from funboost_grpc import RemoteTaskError as GrpcRemoteTaskError


def test_push_and_sync_call_through_boost(queue_name):
    with serving_divide("GRPC", queue_name) as (divide, seen):
        assert_sync_call_and_remote_error(divide, GrpcRemoteTaskError)
        assert_pushes_run(divide, seen, 20)
        assert len(seen) == 22


def test_a_sync_call_is_answered_by_the_run_after_a_requeue(queue_name):
    assert_a_call_is_answered_by_the_run_after_a_requeue("GRPC", queue_name)
