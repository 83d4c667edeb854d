"""The engine's Consumer satisfies the ConsumerHost protocol that brokers are typed against."""
from funboost import BoosterParams, boost
from funboost.plugins.host import ConsumerHost


def test_consumer_is_a_consumer_host(tmp_path):
    @boost(BoosterParams(queue_name="host_protocol_q", broker_kind="memory"))
    def f(x):
        return x

    from funboost.engine.consumer import Consumer

    c = Consumer(f)
    try:
        assert isinstance(c, ConsumerHost)
        assert c.concurrency == f.params.concurrent_num
        assert c.runs_inline is True
        assert c.is_runnable() is True
        assert c.current_qps == 0.0
        c.paused = True
        assert c.is_runnable() is False
    finally:
        c.stop(timeout=1)
    assert c.stopped and c.stop_event.is_set()
