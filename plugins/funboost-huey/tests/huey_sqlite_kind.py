"""The huey kind configured with ``storage="sqlite"``, under the capabilities that configuration really
has, so that the contract suite certifies it honestly (the shipped class declares the default Redis
storage's). Test-only: ``broker_kind = "huey_sqlite_kind:SqliteHueyBroker"``."""
from __future__ import annotations

import dataclasses

from funboost_huey import HueyBroker


class SqliteHueyBroker(HueyBroker):
    kind = "huey_sqlite_test"
    capabilities = dataclasses.replace(
        HueyBroker.capabilities,
        at_least_once=False,  # huey deletes a task's row when a worker takes it
        in_flight_count=False,  # so nothing knows what is in flight
        priority=True, max_priority=9,  # huey's SQLite storage orders by priority
        notes="")
