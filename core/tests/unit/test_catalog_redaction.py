"""Broker options recorded in the catalog (shown to every viewer of the web manager) carry no secret."""
import pytest

from funboost.admin.catalog import redact_options


@pytest.mark.parametrize("opts", [
    {"url": "redis://127.0.0.1:6379/0?password=S3CRET"},                      # redis-py's query password
    {"url": "nats://u:S3CRET@h1:4222,nats://u:S3CRET@h2:4222"},               # nats cluster (documented form)
    {"dsn": "host=127.0.0.1 user=postgres password=S3CRET dbname=x"},          # libpq keyword DSN
    {"dsn": "postgresql://u@h/db?password=S3CRET&sslmode=disable"},
    {"servers": [{"host": "h", "password": "S3CRET"}]},
    {"url": "redis://:S3CRET@127.0.0.1:6379/0"},
])
def test_no_secret_left(opts):
    out, redacted = redact_options(opts)
    assert "S3CRET" not in repr(out)
    assert redacted


def test_plain_options_kept():
    opts = {"url": "redis://127.0.0.1:6379/0?socket_timeout=3", "dsn": "host=h user=u dbname=d", "n": 1}
    assert redact_options(opts) == (opts, [])
