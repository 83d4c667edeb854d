"""Prometheus exposition (``/metrics``) from the manager's reads: per queue runs, failures, a run-time
histogram, queue sizes and live consumers.

Runs, failures and the histogram are summed over the day rows kept by the state backend (15 days), so
they survive restarts of consumers and of the manager; when a day row ages out the counters step down,
which Prometheus treats as a counter reset (``rate()`` / ``increase()`` stay correct).
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from funboost.admin import QueueAdmin
from funboost.timeseries import HIST_BOUNDS

# every 4th histogram bound: 2 buckets per decade, 10 us .. 10,000 s
_EXPORTED = list(range(0, len(HIST_BOUNDS), 4))


class _QueueCollector:
    def __init__(self, admin: QueueAdmin) -> None:
        self.admin = admin

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("funboost_runs", "Finished runs (15-day window of the state backend)",
                                   labels=["queue"])
        fails = CounterMetricFamily("funboost_failures", "Failed runs (15-day window)", labels=["queue"])
        hist = HistogramMetricFamily("funboost_run_seconds", "Run time of finished runs", labels=["queue"])
        sizes = GaugeMetricFamily("funboost_queue_messages", "Messages in the queue by state (absent: the broker "
                                  "kind cannot tell)", labels=["queue", "state"])
        consumers = GaugeMetricFamily("funboost_consumers", "Live consumers (heartbeats)", labels=["queue"])
        rate = GaugeMetricFamily("funboost_runs_per_second", "Runs per second over the last 10 s", labels=["queue"])
        paused = GaugeMetricFamily("funboost_queue_paused", "1 while the queue is paused", labels=["queue"])
        from funboost_web.app import queue_summaries
        for s in queue_summaries(self.admin):
            q = s.queue
            tot = s.totals
            runs.add_metric([q], tot["runs"])
            fails.add_metric([q], tot["failures"])
            h = {int(k): int(v) for k, v in (tot.get("hist") or {}).items()}
            buckets = []
            for i in _EXPORTED:
                buckets.append((repr(HIST_BOUNDS[i]), sum(v for k, v in h.items() if k <= i)))
            buckets.append(("+Inf", sum(h.values())))
            hist.add_metric([q], buckets, tot.get("cost", 0.0))
            for state, v in (("ready", s.ready), ("in_flight", s.in_flight), ("delayed", s.delayed)):
                if v is not None:
                    sizes.add_metric([q, state], v)
            consumers.add_metric([q], s.consumers)
            rate.add_metric([q], s.rate)
            paused.add_metric([q], 1 if s.paused else 0)
        yield from (runs, fails, hist, sizes, consumers, rate, paused)


def render_metrics(admin: QueueAdmin) -> tuple[bytes, str]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_QueueCollector(admin))  # type: ignore[arg-type]
    return generate_latest(reg), CONTENT_TYPE_LATEST
