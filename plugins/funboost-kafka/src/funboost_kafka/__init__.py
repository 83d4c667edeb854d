"""funboost-kafka: the ``kafka`` broker kind (kafka-python >= 3). See docs/brokers/kafka.md."""
from funboost_kafka.broker import KafkaBroker, KafkaPublishError
from funboost_kafka.options import KafkaOptions

__all__ = ["KafkaBroker", "KafkaOptions", "KafkaPublishError"]
