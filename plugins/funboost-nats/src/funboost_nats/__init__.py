"""funboost-nats: NATS brokers for funboost.

Kinds: ``nats_jetstream`` (aliases ``jetstream``, ``nats_js``): a JetStream work-queue stream per queue,
at-least-once, persistent, native delay; ``nats_core`` (alias ``nats``): a queue group on a plain subject,
at-most-once, with ``sync_call`` over request-reply. See docs/brokers/nats.md.
"""
from __future__ import annotations

__version__ = "0.1.0"

from funboost_nats.core import NatsCoreBroker  # noqa: E402
from funboost_nats.jetstream import NatsJetStreamBroker  # noqa: E402
from funboost_nats.options import CoreOptions, JetStreamOptions, NatsOptions  # noqa: E402

ALL_BROKERS = (NatsJetStreamBroker, NatsCoreBroker)


def funboost_register_brokers(registry) -> None:  # type: ignore[no-untyped-def]
    """Register both NATS kinds (for users who load the module rather than the entry points)."""
    for cls in ALL_BROKERS:
        registry.register(cls)


__all__ = ["NatsJetStreamBroker", "NatsCoreBroker", "NatsOptions", "JetStreamOptions", "CoreOptions",
           "ALL_BROKERS", "funboost_register_brokers"]
