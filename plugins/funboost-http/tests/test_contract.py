"""The core contract suite, with the capabilities the http kind declares.

The http kind has no broker server: a message can only be published once a consumer listens. The
contract tests publish before they fetch, so every broker made here starts serving first (as the engine
does through ``run_consumer`` when ``consume()`` starts).
"""
import json

import pytest
from funboost.plugins.broker import OutgoingMessage
from funboost.testing import BrokerContract, fetch_until, wait_until

from funboost_http.errors import HttpBrokerError
from support import free_port


class TestHttpContract(BrokerContract):
    broker_kind = "http"
    broker_options = {"port": free_port(), "publish_timeout": 5.0}

    @pytest.fixture
    def make_broker(self, broker_cls, options, queue_name):
        made = []

        def make(name=None, opts=None):
            b = broker_cls(name or queue_name, opts if opts is not None else options)
            b.serve()
            made.append(b)
            return b
        yield make
        for b in made:
            b.purge()
            b.close()

    def test_malformed_message_is_dead_lettered_and_consumer_survives(self, broker_cls, options_raw, queue_name,
                                                                      make_broker):
        """Overridden: invalid JSON never enters an http consumer, the server refuses it with 400 (the
        publisher sees the error); a message whose arguments do not fit the function is dead-lettered by
        the engine as in the core suite."""
        from funboost import BoosterParams, boost
        done = []

        @boost(BoosterParams(queue_name=queue_name, broker_kind=broker_cls.kind, broker_exclusive_config=options_raw,
                             concurrent_num=2, state_backend="memory", log_to_console=False))
        def work(x: int) -> None:
            done.append(x)

        raw = make_broker()
        dlx = make_broker(f"{queue_name}_dlx")
        try:
            work.consume()
            for bad in ("this is not json", json.dumps([1, 2, 3])):
                with pytest.raises(HttpBrokerError) as e:
                    raw.publish([OutgoingMessage(body=bad, task_id="bad")])
                assert e.value.code == "400"
            raw.publish([OutgoingMessage(body=json.dumps({"nope": 1}), task_id="bad3")])
            work.push(42)
            wait_until(lambda: done == [42], 20, message="valid task ran")
            [d] = fetch_until(dlx, 1, timeout=20)
            body = d.body if isinstance(d.body, dict) else json.loads(d.body)
            assert "arguments do not fit" in body["extra"]["dead_letter_reason"]
            dlx.ack([d])
        finally:
            work.stop_consume(10)
