"""Brokers that ship with funboost-core (registered through the same entry-point path as plugins)."""
