"""Through the engine: @boost with broker_kind="grpc", push and sync_call."""
import threading

import pytest
from funboost import BoosterParams, RemoteTaskError, boost

from funboost_grpc import RemoteTaskError as GrpcRemoteTaskError
from support import free_port, wait_until


def test_push_and_sync_call_through_boost(queue_name):
    seen = []
    lock = threading.Lock()
    cfg = {"port": free_port()}

    @boost(BoosterParams(queue_name=queue_name, broker_kind="GRPC", broker_exclusive_config=cfg, concurrent_num=8,
                         max_retry_times=0, state_backend="memory", log_to_console=False))
    def divide(a: int, b: int = 1) -> float:
        with lock:
            seen.append((a, b))
        return a / b

    divide.consume()
    try:
        assert divide.sync_call(10, b=4, timeout=10) == 2.5
        with pytest.raises(RemoteTaskError) as info:  # funboost.RemoteTaskError, raised in one round trip
            divide.sync_call(1, b=0, timeout=10)
        assert isinstance(info.value, GrpcRemoteTaskError)
        assert info.value.exception_type == "ZeroDivisionError"
        assert "division by zero" in info.value.exception_msg
        for i in range(20):
            divide.push(i, b=1)
        wait_until(lambda: len(seen) == 22, 20)
        assert divide.get_message_count() == 0
    finally:
        divide.stop_consume(10)
