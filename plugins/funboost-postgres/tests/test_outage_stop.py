"""A graceful stop during a PostgreSQL outage, with nothing running, must not wait for reconnect_timeout:
the consumer's metrics thread samples queue_size() and the stop joins that thread (core's scenario)."""
from funboost.testing.outage import assert_graceful_stop_during_outage_is_prompt


def test_graceful_stop_during_outage_is_prompt(tmp_path):
    assert_graceful_stop_during_outage_is_prompt(tmp_path, "POSTGRES", {"dsn": "postgresql://postgres@127.0.0.1:1/x"})
