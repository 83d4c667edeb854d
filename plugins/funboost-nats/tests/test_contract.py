"""The core contract suite on both NATS kinds."""
from __future__ import annotations

from funboost.testing import BrokerContract


class TestJetStreamContract(BrokerContract):
    broker_kind = "nats_jetstream"
    # ack_wait is the server's redelivery deadline for a dead consumer's messages
    fast_reclaim_options = {"ack_wait": 2.0}
    redelivery_timeout = 15.0


class TestNatsCoreContract(BrokerContract):
    broker_kind = "nats_core"
