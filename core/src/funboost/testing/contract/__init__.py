"""The broker contract suite, one module per capability, gated at collection by the kind's
``Capabilities`` (a test the kind does not qualify for is skipped with the reason).

Certify any installed kind from anywhere::

    pytest --pyargs funboost.testing.contract --funboost-broker KIND -rs

or, in a plugin's own tests, subclass :class:`BrokerContract` (all modules) or only the mixins you want::

    from funboost.testing import BrokerContract

    class TestMyBrokerContract(BrokerContract):
        broker_kind = "my_kind"
        broker_options = {"url": "..."}

Modules: ``test_registration``, ``test_publish_consume``, ``test_ack``, ``test_requeue``,
``test_dead_letter``, ``test_queue_size``, ``test_delay``, ``test_priority``, ``test_purge``,
``test_redelivery``, ``test_delivery_mode``, ``test_persistence``, ``test_engine``, ``test_controls``,
``test_publish_mode``. See
``docs/writing-a-broker-plugin.md``.
"""
from funboost.testing.contract.base import ContractBase
from funboost.testing.contract.test_ack import AckTests
from funboost.testing.contract.test_controls import ControlTests
from funboost.testing.contract.test_dead_letter import DeadLetterTests
from funboost.testing.contract.test_delay import DelayTests
from funboost.testing.contract.test_delivery_mode import DeliveryModeTests
from funboost.testing.contract.test_engine import EngineTests
from funboost.testing.contract.test_persistence import PersistenceTests
from funboost.testing.contract.test_priority import PriorityTests
from funboost.testing.contract.test_publish_consume import PublishConsumeTests
from funboost.testing.contract.test_publish_mode import PublishModeTests
from funboost.testing.contract.test_purge import PurgeTests
from funboost.testing.contract.test_queue_size import QueueSizeTests
from funboost.testing.contract.test_redelivery import RedeliveryTests
from funboost.testing.contract.test_registration import RegistrationTests
from funboost.testing.contract.test_requeue import RequeueTests


class BrokerContract(RegistrationTests, PublishConsumeTests, AckTests, RequeueTests, DeadLetterTests,
                     QueueSizeTests, DelayTests, PriorityTests, PurgeTests, RedeliveryTests, DeliveryModeTests,
                     PersistenceTests, EngineTests, ControlTests, PublishModeTests, ContractBase):
    """Every contract test; subclass it in a plugin's tests and set ``broker_kind``."""


__all__ = ["BrokerContract", "ContractBase", "RegistrationTests", "PublishConsumeTests", "AckTests",
           "RequeueTests", "DeadLetterTests", "QueueSizeTests", "DelayTests", "PriorityTests", "PurgeTests",
           "RedeliveryTests", "DeliveryModeTests", "PersistenceTests", "EngineTests", "ControlTests", "PublishModeTests"]
