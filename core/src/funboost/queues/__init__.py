"""The original's ``funboost.queues`` held the queue implementations behind some of its broker kinds.

Here every kind is a broker plugin (``funboost.brokers.memory`` in core, ``funboost-<name>`` distributions);
what user code reached in this package is kept: :mod:`funboost.queues.memory_queues_map`, the in-process
queues of the memory broker by name.
"""
