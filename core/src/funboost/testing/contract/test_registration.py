"""Registration: the kind resolves by every name, its options reject unknown keys, and its declared
capabilities are consistent with each other."""
from __future__ import annotations

from funboost.plugins.broker import Broker
from funboost.plugins.manager import get_broker_registry, normalize_kind, validate_broker_class
from funboost.testing.contract.base import ContractBase
from funboost.testing.requirements import publishes_nothing


@publishes_nothing
class RegistrationTests:
    def test_registration(self, kind, broker_cls):
        validate_broker_class(broker_cls)
        reg = get_broker_registry()
        if ":" not in kind:
            assert reg.resolve(kind.upper()) is broker_cls, f"kind {kind.upper()!r} does not resolve to {broker_cls}"
            assert reg.resolve(kind.lower()) is broker_cls, f"kind {kind.lower()!r} does not resolve to {broker_cls}"
            names = {i.kind for i in reg.installed()}
            assert normalize_kind(broker_cls.kind) in names, \
                f"{broker_cls.__name__}.kind={broker_cls.kind!r} is not among the installed kinds {sorted(names)}"
        assert reg.resolve(broker_cls.kind) is broker_cls, \
            f"{broker_cls.__name__}.kind={broker_cls.kind!r} resolves to {reg.resolve(broker_cls.kind)}"
        for alias in broker_cls.aliases:
            assert reg.resolve(alias) is broker_cls, \
                f"alias {alias!r} of {broker_cls.__name__} resolves to {reg.resolve(alias)}"
        caps = broker_cls.capabilities
        assert caps.queue_size in ("exact", "approximate", "none"), \
            f"Capabilities.queue_size={caps.queue_size!r}: must be 'exact', 'approximate' or 'none'"
        assert caps.ordering in ("fifo", "partition", "priority", "none"), \
            f"Capabilities.ordering={caps.ordering!r}: must be 'fifo', 'partition', 'priority' or 'none'"

    def test_options_reject_unknown_keys(self, broker_cls):
        try:
            broker_cls.parse_options({"surely_not_an_option_of_any_broker": 1})
        except Exception:
            return
        raise AssertionError(f"{broker_cls.__name__}.parse_options accepted an unknown key: its options model must "
                             f"refuse unknown keys (derive it from BrokerOptions: extra='forbid'), so that a typo in "
                             f"broker_exclusive_config is an error")

    def test_capabilities_are_consistent(self, broker_cls):
        caps = broker_cls.capabilities
        if not caps.cross_process:
            # a queue that lives inside one process ends with it
            assert not caps.persistent, "persistent=True but cross_process=False: the queue dies with its process"
            assert not caps.at_least_once, "at_least_once=True but cross_process=False: nobody survives to get it back"
        if caps.ordering == "priority":
            assert caps.priority, "ordering='priority' needs priority=True"
        if caps.priority:
            assert caps.max_priority > 0, "priority=True needs max_priority > 0"
        if caps.in_flight_count:
            assert caps.queue_size != "none", "in_flight_count=True needs a queue size"
        if caps.needs_serving_consumer:
            assert broker_cls.serve is not Broker.serve, "needs_serving_consumer=True needs serve()"
        if caps.request_response:
            assert broker_cls.sync_call is not Broker.sync_call, "request_response=True needs sync_call()"


class TestRegistration(RegistrationTests, ContractBase):
    pass
