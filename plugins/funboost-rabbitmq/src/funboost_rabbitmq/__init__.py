"""funboost-rabbitmq: the ``rabbitmq`` broker kind (aliases ``rabbitmq_pika``, ``rabbitmq_amqpstorm``) and the
original's exchange routing, ``rabbitmq_complex_routing``."""
from .broker import RabbitmqBroker, RabbitmqComplexRoutingBroker
from .options import DEFAULT_URL, ENV_URL, RabbitmqComplexRoutingOptions, RabbitmqOptions

__all__ = ["RabbitmqBroker", "RabbitmqOptions", "RabbitmqComplexRoutingBroker", "RabbitmqComplexRoutingOptions",
           "ENV_URL", "DEFAULT_URL"]
__version__ = "0.1.0"
