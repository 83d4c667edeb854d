"""Time-series metrics of queues: the row format, the run-time histogram and the read-side aggregation.

Consumers count runs, failures, run time and a run-time histogram in memory (``Stats.record``, no I/O per
message); about once a second the control thread turns the counters into per-second deltas, and every
:data:`FLUSH_INTERVAL` seconds it writes them to the state backend in one call (``metrics_put``), with the
queue depth it sampled then. Each consumer writes its own rows (``source`` = its consumer id) and replaces
them whole, so writers never merge each other's values; readers sum the sources of a bucket.

Resolutions (bucket width, kept for):

=====  ======  ==========
``s``  1 s     15 minutes
``m``  60 s    3 hours
``h``  1 h     3 days
``d``  1 day   15 days
=====  ======  ==========

A row's ``data``: ``r`` runs, ``f`` failures, ``c`` summed run time (s), ``h`` sparse histogram
``{bucket index: count}`` over :data:`HIST_BOUNDS`, ``d`` queue depth (ready + delayed) when sampled.
This is a leaf module (it imports nothing of funboost).
"""
from __future__ import annotations

import bisect
import time
from typing import Iterable, NamedTuple, Optional

#: resolution name -> (bucket width in seconds, retention in seconds)
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "s": (1, 15 * 60),
    "m": (60, 3 * 3600),
    "h": (3600, 3 * 86400),
    "d": (86400, 15 * 86400),
}
#: what the charts show per resolution: (resolution, number of buckets)
WINDOWS: dict[str, tuple[str, int]] = {"60s": ("s", 60), "60m": ("m", 60), "24h": ("h", 24), "10d": ("d", 10)}
FLUSH_INTERVAL = 5.0

# run-time histogram: 8 buckets per decade from 10 us to 10,000 s (a percentile is read to within ~15 %);
# index i counts runs with HIST_BOUNDS[i-1] < cost <= HIST_BOUNDS[i]; the last bucket is open-ended
HIST_BOUNDS: tuple[float, ...] = tuple(1e-5 * 10 ** (i / 8) for i in range(73))
N_HIST = len(HIST_BOUNDS) + 1


def hist_index(cost: float) -> int:
    return bisect.bisect_left(HIST_BOUNDS, cost)


class MetricRow(NamedTuple):
    res: str
    bucket: int  # epoch seconds of the bucket's start
    queue: str
    source: str  # the writing consumer's id
    data: dict
    ttl: float = 0.0  # seconds to keep (write side); 0 on rows read back

    @staticmethod
    def ttl_of(res: str) -> float:
        return float(RESOLUTIONS[res][1])


def bucket_of(t: float, res: str) -> int:
    width = RESOLUTIONS[res][0]
    return int(t // width) * width


def window_start(res: str, n: int, now: Optional[float] = None) -> int:
    """The first bucket of the ``n`` most recent buckets (the current one included)."""
    width = RESOLUTIONS[res][0]
    return bucket_of(time.time() if now is None else now, res) - (n - 1) * width


def merge_into(acc: dict, data: dict) -> None:
    """Add ``data`` (a row's data) into ``acc`` (runs, failures, cost, histogram); depth is not additive
    and is handled by the caller."""
    acc["r"] = acc.get("r", 0) + int(data.get("r", 0))
    acc["f"] = acc.get("f", 0) + int(data.get("f", 0))
    acc["c"] = acc.get("c", 0.0) + float(data.get("c", 0.0))
    h = data.get("h")
    if h:
        ah = acc.setdefault("h", {})
        for k, v in h.items():
            ah[str(k)] = ah.get(str(k), 0) + int(v)


def percentile(hist: Optional[dict], q: float) -> Optional[float]:
    """The ``q`` quantile (0..1) of a sparse histogram, as the upper bound of its bucket; None if empty."""
    if not hist:
        return None
    items = sorted((int(k), int(v)) for k, v in hist.items())
    total = sum(v for _, v in items)
    if total <= 0:
        return None
    want = q * total
    seen = 0
    for idx, v in items:
        seen += v
        if seen >= want:
            return HIST_BOUNDS[min(idx, len(HIST_BOUNDS) - 1)]
    return HIST_BOUNDS[-1]


class Point(NamedTuple):
    t: int
    runs: int
    failures: int
    avg: Optional[float]
    p50: Optional[float]
    p95: Optional[float]
    depth: Optional[int]

    def as_dict(self) -> dict:
        return self._asdict()


def series(rows: Iterable[MetricRow], res: str, n: int, now: Optional[float] = None) -> list[Point]:
    """One point per bucket of the ``n`` most recent buckets of ``res``, every source and queue summed.
    Depth: the largest sample among a queue's sources, summed over queues; None where nothing sampled."""
    width = RESOLUTIONS[res][0]
    start = window_start(res, n, now)
    accs: dict[int, dict] = {}
    depths: dict[int, dict[str, int]] = {}
    for row in rows:
        if row.res != res or row.bucket < start:
            continue
        merge_into(accs.setdefault(row.bucket, {}), row.data)
        d = row.data.get("d")
        if d is not None:
            per_q = depths.setdefault(row.bucket, {})
            per_q[row.queue] = max(per_q.get(row.queue, 0), int(d))
    out = []
    for i in range(n):
        b = start + i * width
        acc = accs.get(b, {})
        runs = int(acc.get("r", 0))
        h = acc.get("h")
        dq = depths.get(b)
        out.append(Point(b, runs, int(acc.get("f", 0)), (acc["c"] / runs) if runs else None,
                         percentile(h, 0.5), percentile(h, 0.95), sum(dq.values()) if dq else None))
    return out


def totals(rows: Iterable[MetricRow]) -> dict:
    """Summed runs / failures / cost / histogram of ``rows`` (e.g. the day rows: totals over 15 days)."""
    acc: dict = {}
    for row in rows:
        merge_into(acc, row.data)
    runs = acc.get("r", 0)
    return {"runs": runs, "failures": acc.get("f", 0), "avg": (acc.get("c", 0.0) / runs) if runs else None,
            "p50": percentile(acc.get("h"), 0.5), "p95": percentile(acc.get("h"), 0.95), "hist": acc.get("h", {}),
            "cost": acc.get("c", 0.0)}
