"""The consumer's side of the time-series metrics (format and reading: :mod:`funboost.timeseries`).

``Stats.record`` keeps cumulative counters and a cumulative run-time histogram in memory (a few additions
per message). :meth:`MetricsRecorder.sample`, called by the control thread about once a second, turns the
difference since the previous sample into that second's row and adds it into the current minute, hour and
day; :meth:`MetricsRecorder.flush` writes what accumulated in one ``metrics_put`` call every
:data:`~funboost.timeseries.FLUSH_INTERVAL` seconds. Nothing here runs per message.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from funboost.timeseries import N_HIST, MetricRow, bucket_of, merge_into

if TYPE_CHECKING:  # pragma: no cover
    from funboost.state.base import StateBackend


class MetricsRecorder:
    """Per-consumer metric rows. ``snapshot`` returns the cumulative ``(runs, failures, cost, hist)``."""

    def __init__(self, queue: str, source: str,
                 snapshot: Callable[[], tuple[int, int, float, list[int]]]) -> None:
        self.queue = queue
        self.source = source
        self._snapshot = snapshot
        self._prev = snapshot()
        self._seconds: dict[int, dict] = {}  # second rows not written yet
        self._current: dict[str, tuple[int, dict]] = {}  # res -> (bucket, data) for m / h / d
        self._dirty: set[str] = set()
        self._finished: list[MetricRow] = []  # m / h / d buckets that ended with runs not written yet
        self.last_flush = time.monotonic()
        self.supported = True  # False once the state backend says it stores no metrics

    def sample(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        cur = self._snapshot()
        runs, fails, cost = cur[0] - self._prev[0], cur[1] - self._prev[1], cur[2] - self._prev[2]
        if runs <= 0:
            self._prev = cur
            return
        hist = {str(i): cur[3][i] - self._prev[3][i] for i in range(N_HIST) if cur[3][i] != self._prev[3][i]}
        self._prev = cur
        delta = {"r": runs, "f": fails, "c": round(cost, 6), "h": hist}
        merge_into(self._seconds.setdefault(bucket_of(now, "s"), {}), delta)
        for res in ("m", "h", "d"):
            b = bucket_of(now, res)
            old = self._current.get(res)
            if old is None or old[0] != b:
                if old is not None and res in self._dirty:
                    # the bucket ended with runs the last flush did not write: kept for the next one (they were
                    # dropped: a minute's row lost the runs of its last seconds)
                    self._finished.append(MetricRow(res, old[0], self.queue, self.source, old[1],
                                                    MetricRow.ttl_of(res)))
                self._current[res] = old = (b, {})
            merge_into(old[1], delta)
            self._dirty.add(res)

    def rows(self, depth: Optional[int], now: Optional[float] = None) -> list[MetricRow]:
        """The rows to write now (and forget the second rows). ``depth`` is attached to the current
        second / minute / hour / day rows, so depth is charted even while nothing runs."""
        now = time.time() if now is None else now
        out = []
        sec = bucket_of(now, "s")
        if depth is not None:
            self._seconds.setdefault(sec, {})["d"] = depth
        for b, data in sorted(self._seconds.items()):
            out.append(MetricRow("s", b, self.queue, self.source, data, MetricRow.ttl_of("s")))
        self._seconds.clear()
        out.extend(self._finished)
        self._finished.clear()
        for res in ("m", "h", "d"):
            b = bucket_of(now, res)
            cur = self._current.get(res)
            if cur is None or cur[0] != b:
                if cur is not None and res in self._dirty:  # the finished bucket's last value
                    out.append(MetricRow(res, cur[0], self.queue, self.source, cur[1], MetricRow.ttl_of(res)))
                cur = self._current[res] = (b, {})
                self._dirty.add(res)
            if depth is not None:
                cur[1]["d"] = depth
                self._dirty.add(res)
            if res in self._dirty:
                out.append(MetricRow(res, cur[0], self.queue, self.source, dict(cur[1]), MetricRow.ttl_of(res)))
        self._dirty.clear()
        return out

    def flush(self, state: "StateBackend", depth: Optional[int]) -> int:
        """Write the pending rows; returns how many. A backend without metrics storage is remembered
        and skipped from then on."""
        self.last_flush = time.monotonic()
        if not self.supported:
            return 0
        rows = self.rows(depth)
        if not rows:
            return 0
        try:
            state.metrics_put(rows)
        except NotImplementedError:
            self.supported = False
            return 0
        return len(rows)

