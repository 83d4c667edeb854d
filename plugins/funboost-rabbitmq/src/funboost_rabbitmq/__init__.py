"""funboost-rabbitmq: the ``rabbitmq`` broker kind (aliases ``rabbitmq_pika``, ``rabbitmq_amqpstorm``)."""
from .broker import RabbitmqBroker
from .options import DEFAULT_URL, ENV_URL, RabbitmqOptions

__all__ = ["RabbitmqBroker", "RabbitmqOptions", "ENV_URL", "DEFAULT_URL"]
__version__ = "0.1.0"
