"""Testing tools shipped with funboost-core: the broker contract suite and helpers.

See ``docs/writing-a-broker-plugin.md``. ``pytest --pyargs funboost.testing.contract --funboost-broker KIND``
certifies any installed broker kind.
"""
from funboost.testing.contract import BrokerContract, ContractBase
from funboost.testing.contract.base import (MessagesLost, assert_unreachable_reason_hides_password, body_text,
                                            envelope, fetch_until, require_available, require_service, wait_until)
from funboost.testing.requirements import requires

__all__ = ["BrokerContract", "ContractBase", "requires", "require_service", "require_available", "wait_until",
           "fetch_until", "envelope", "body_text", "MessagesLost", "assert_unreachable_reason_hides_password"]
