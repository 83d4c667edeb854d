"""Per-partition bookkeeping of which fetched offsets are finished, to commit only safe offsets.

Tasks finish out of order, but a Kafka group keeps one committed offset per partition: "everything
below this offset is done". Core's :class:`~funboost.contiguous.ContiguousTracker` keeps the safe
commit point (the lowest offset still unfinished); a partition's tracker adds the revoked mark.
"""
from __future__ import annotations

from funboost.contiguous import ContiguousTracker


class PartitionTracker(ContiguousTracker):
    """Offsets of one assigned partition. A tracker is replaced (never reused) when its partition is
    revoked and assigned again, so a late ``done`` for an old assignment is simply lost with the old
    tracker."""

    __slots__ = ("revoked",)

    def __init__(self) -> None:
        super().__init__()
        self.revoked = False
