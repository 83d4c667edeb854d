"""Queue administration without the user's code: what the web manager and the CLI use.

Everything is read from one state backend (the queue catalog written by consumers, their heartbeats, the
metric rows, the status records) and from the broker plugin built from the catalog's broker kind and
non-secret options. Nothing here imports a booster or the function of a queue.

    from funboost.admin import QueueAdmin
    admin = QueueAdmin()                      # the default state backend (FUNBOOST_STATE_BACKEND, sqlite)
    for q in admin.queue_names(): ...
    admin.pause("orders"); admin.applied("orders")   # -> Applied(flag="pause", value=True, on=2, of=3)
    admin.series("orders", "60s")             # per-second points of the last minute

Control operations set the queue's flags (:class:`~funboost.flags.QueueFlag`), which every consumer reads
about once a second; :meth:`QueueAdmin.applied` reports how many live consumers show the value in their
heartbeat (every ``FUNBOOST_HEARTBEAT_INTERVAL`` seconds, 5 by default).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from funboost.admin.audit import audit_log, read_audit
from funboost.admin.catalog import CATALOG, read_catalog, read_queue_record
from funboost.admin.deadletters import DeadLetterFilter, DeadLetterResult, dead_letter_action
from funboost.flags import QueueFlag, concurrency_value, qps_value
from funboost.plugins.broker import Broker, OutgoingMessage, QueueSize
from funboost.timeseries import (FLUSH_INTERVAL, RESOLUTIONS, WINDOWS, MetricRow, Point, bucket_of, merge_into, series,
                                 totals, window_start)

if TYPE_CHECKING:  # pragma: no cover
    from funboost.state.base import StateBackend

__all__ = ["QueueAdmin", "QueueSummary", "Applied", "DeadLetterFilter", "DeadLetterResult", "audit_log",
           "read_audit", "BrokerUnknown"]

#: env var: JSON ``{"<broker kind>": {<options>}}`` merged over the catalog's options when the manager builds
#: a queue's broker (for secrets that the catalog does not record: passwords, tokens)
ENV_BROKER_OPTIONS = "FUNBOOST_ADMIN_BROKER_OPTIONS"
#: how old a queue-size reading the summaries accept (seconds)
SIZE_MAX_AGE = 2.0
#: seconds after a bucket's end when no consumer writes it any more (3 flushes)
FINAL_AFTER = 3 * FLUSH_INTERVAL


class BrokerUnknown(LookupError):
    """The queue's broker cannot be built here (no catalog record, or its kind is not installed)."""


@dataclass
class Applied:
    """How many live consumers of a queue show a flag's value in their heartbeat."""

    flag: str
    value: Any
    on: int
    of: int

    def as_dict(self) -> dict:
        return {"flag": self.flag, "value": self.value, "on": self.on, "of": self.of}

    def __str__(self) -> str:
        return f"applied on {self.on} of {self.of} consumers"


@dataclass
class QueueSummary:
    """One row of the queues page."""

    queue: str
    broker_kind: Optional[str]
    ready: Optional[int]
    in_flight: Optional[int]
    delayed: Optional[int]
    size_error: Optional[str]
    consumers: int
    paused: bool
    qps: Optional[float]
    concurrent_num: Optional[int]
    runs_10s: int
    failures_10s: int
    runs_total: int
    failures_total: int
    avg: Optional[float]
    p95: Optional[float]
    rate: float  # runs per second over the last 10 s
    eta_drain: Optional[float]  # seconds to drain the ready messages at that rate
    record: dict
    applied: dict  # flag -> Applied.as_dict(): "applied on N of M consumers"
    totals: dict  # timeseries.totals() of the day rows (histogram and summed run time included)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("record")
        d.pop("totals")
        return d


def _hb_value_matches(info: dict, flag: str, value: Any) -> bool:
    if flag == QueueFlag.PAUSE.value:
        return bool(info.get("paused")) == bool(value)
    if flag == QueueFlag.QPS.value:
        cur = info.get("qps")
        if value is None or cur is None:
            return value is None and cur is None
        return abs(float(cur) - float(value)) < 1e-9
    if flag == QueueFlag.CONCURRENT_NUM.value:
        return info.get("concurrent_num") == value
    return False


class QueueAdmin:
    """Typed operations on the queues that one state backend knows."""

    def __init__(self, state: Optional["StateBackend"] = None,
                 broker_overrides: Optional[dict[str, dict]] = None) -> None:
        if state is None:
            from funboost.state.base import get_state_backend
            state = get_state_backend()
        self.state = state
        overrides = dict(broker_overrides or {})
        env = os.environ.get(ENV_BROKER_OPTIONS)
        if env:
            for kind, opts in json.loads(env).items():
                overrides.setdefault(kind.lower(), {}).update(opts)
        self.broker_overrides = {k.lower(): v for k, v in overrides.items()}
        self._brokers: dict[str, tuple[str, Broker]] = {}
        self._lock = threading.Lock()
        # metric rows of final buckets: (res, queue) -> bucket -> rows; and the bucket range they cover
        self._final_rows: dict[tuple[str, Optional[str]], dict[int, list[MetricRow]]] = {}
        self._covered: dict[tuple[str, Optional[str]], tuple[int, int]] = {}
        self._past_days: dict[tuple[str, int], dict] = {}
        self._sizes: dict[str, tuple[float, tuple[Optional[QueueSize], Optional[str]]]] = {}  # (queue, today) -> merged day rows before today

    # ------------------------------------------------------------------ catalog, consumers
    def catalog(self) -> dict[str, dict]:
        """The catalog record of every queue (dead-letter queues are not listed separately)."""
        return read_catalog(self.state)

    def record(self, queue: str) -> Optional[dict]:
        return read_queue_record(self.state, queue)

    def consumers(self, queue: Optional[str] = None) -> list[dict]:
        """Live consumers (their heartbeats), newest start first."""
        cs = self.state.live_consumers(queue)
        return sorted(cs, key=lambda c: c.get("started") or 0, reverse=True)

    def queue_names(self) -> list[str]:
        """Queues with a catalog record or a live consumer."""
        names = set(self.catalog())
        names.update(str(c["queue"]) for c in self.state.live_consumers(None) if c.get("queue"))
        return sorted(names)

    def forget(self, queue: str) -> bool:
        """Drop a queue's catalog record (a consumer that starts again writes it back)."""
        return self.state.doc_delete(CATALOG, queue)

    # ------------------------------------------------------------------ brokers and sizes
    def broker(self, queue: str) -> Broker:
        """The queue's broker, built from its catalog record (cached; rebuilt when the record changes)."""
        rec = self.record(queue)
        if rec is None or not rec.get("broker_kind"):
            raise BrokerUnknown(f"queue {queue!r} has no catalog record (no consumer of it has run with this "
                                f"state backend)")
        from funboost.plugins.manager import resolve_broker_kind
        kind = rec["broker_kind"]
        opts = {k: v for k, v in (rec.get("broker_options") or {}).items() if not k.endswith("_redacted")}
        opts.update(self.broker_overrides.get(kind.lower(), {}))
        key = json.dumps([kind, opts], sort_keys=True, default=str)
        with self._lock:
            cached = self._brokers.get(queue)
            if cached is not None and cached[0] == key:
                return cached[1]
        try:
            cls = resolve_broker_kind(kind)
            broker = cls(queue, cls.parse_options(opts))
        except Exception as exc:
            raise BrokerUnknown(f"cannot build the {kind!r} broker of {queue!r}: {exc}") from exc
        with self._lock:
            old = self._brokers.get(queue)
            self._brokers[queue] = (key, broker)
        if old is not None:
            try:
                old[1].close()
            except Exception:
                pass
        return broker

    def sizes(self, queue: str, max_age: float = 0.0) -> tuple[Optional[QueueSize], Optional[str]]:
        """(sizes, None), or (None, why they are unknown). A count the kind cannot tell is None.
        ``max_age``: a reading up to that many seconds old is good enough (a size query can be a count
        over the queue's table: pages that refresh every second share one)."""
        now = time.monotonic()
        if max_age > 0:
            with self._lock:
                hit = self._sizes.get(queue)
            if hit is not None and now - hit[0] <= max_age:
                return hit[1]
        try:
            out: tuple[Optional[QueueSize], Optional[str]] = (self.broker(queue).queue_size(), None)
        except Exception as exc:
            out = (None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._sizes[queue] = (now, out)
        return out

    def clear(self, queue: str) -> int:
        """Drop every ready message; returns how many (-1 when the kind cannot tell)."""
        n = self.broker(queue).purge()
        with self._lock:
            self._sizes.pop(queue, None)
        return n

    def publish(self, queue: str, kwargs: dict, *, task_id: Optional[str] = None,
                options: Optional[dict] = None) -> str:
        """Publish a message with these keyword arguments (and envelope options such as
        ``is_using_rpc_mode``, ``countdown``); returns its task id. The arguments are checked against the
        catalog's argument names when the catalog has them."""
        from funboost.message import build_envelope, dumps
        rec = self.record(queue) or {}
        names, required = rec.get("arg_names") or [], rec.get("required_args") or []
        if names:
            missing = [n for n in required if n not in kwargs]
            unknown = [k for k in kwargs if k not in names]
            if missing or unknown:
                raise ValueError(f"{queue!r} takes {names}: missing {missing}, unknown {unknown}")
        env = build_envelope(kwargs, task_id=task_id, extra_options=options)
        broker = self.broker(queue)
        caps = broker.capabilities
        extra = env["extra"]
        eta = None
        if caps.native_delay and (extra.get("countdown") or extra.get("eta")):
            from funboost.eta import message_eta
            eta = message_eta(extra)
        om = OutgoingMessage(body="" if broker.accepts_payload else dumps(env), task_id=extra["task_id"],
                             payload=env if broker.accepts_payload else None, eta=eta)
        broker.publish([om])
        return extra["task_id"]

    def result(self, task_id: str, timeout: float = 0.0) -> Optional[dict]:
        """The RPC result of ``task_id`` (messages published with ``is_using_rpc_mode``)."""
        if timeout > 0:
            return self.state.wait_result(task_id, timeout)
        return self.state.get_result(task_id)

    # ------------------------------------------------------------------ controls
    def flags(self, queue: str) -> dict:
        return {str(k): v for k, v in self.state.get_flags(queue).items()}

    def _set(self, queue: str, flag: QueueFlag, value: Any) -> None:
        self.state.set_flag(queue, flag.value, value)

    def pause(self, queue: str) -> None:
        self._set(queue, QueueFlag.PAUSE, True)

    def resume(self, queue: str) -> None:
        self._set(queue, QueueFlag.PAUSE, False)

    def set_qps(self, queue: str, qps: Optional[float]) -> None:
        self._set(queue, QueueFlag.QPS, qps_value(qps))

    def set_concurrency(self, queue: str, n: int) -> None:
        self._set(queue, QueueFlag.CONCURRENT_NUM, concurrency_value(n))

    def applied(self, queue: str, flag: str, *, flags: Optional[dict] = None,
                consumers: Optional[list[dict]] = None) -> Applied:
        """How many live consumers of ``queue`` show the queue's current value of ``flag`` (pause, qps,
        concurrent_num) in their latest heartbeat. A flag never set is compared with False / None.
        ``flags`` / ``consumers``: already read (saves the reads when a page shows every flag)."""
        flag = str(QueueFlag(flag))
        flags = self.flags(queue) if flags is None else flags
        value = flags.get(flag, False if flag == QueueFlag.PAUSE.value else None)
        cs = self.state.live_consumers(queue) if consumers is None else consumers
        if value is None and flag == QueueFlag.CONCURRENT_NUM.value:
            return Applied(flag, None, len(cs), len(cs))
        return Applied(flag, value, sum(1 for c in cs if _hb_value_matches(c, flag, value)), len(cs))

    def applied_all(self, queue: str, *, flags: Optional[dict] = None,
                    consumers: Optional[list[dict]] = None) -> dict[str, dict]:
        """:meth:`applied` of pause, qps and concurrent_num, from one read of flags and heartbeats."""
        flags = self.flags(queue) if flags is None else flags
        cs = self.state.live_consumers(queue) if consumers is None else consumers
        return {f: self.applied(queue, f, flags=flags, consumers=cs).as_dict()
                for f in ("pause", "qps", "concurrent_num")}

    # ------------------------------------------------------------------ metrics
    def metric_rows(self, res: str, since: int, queue: Optional[str] = None,
                    now: Optional[float] = None) -> list[MetricRow]:
        """Metric rows of ``res`` from bucket ``since`` on (of ``queue`` or every queue). Buckets that ended
        more than :data:`FINAL_AFTER` seconds ago no longer change (consumers write a bucket last at their
        first flush after its end), so they are read once and kept here; later calls read only the
        recent buckets. This is what keeps the charts and the queues page fast over 100 queues."""
        now = time.time() if now is None else now
        width = RESOLUTIONS[res][0]
        key = (res, queue)
        with self._lock:
            cache = self._final_rows.setdefault(key, {})
            covered = self._covered.get(key)
            use_cache = covered is not None and covered[0] <= since <= covered[1]
            read_from = max(since, covered[1]) if (use_cache and covered is not None) else since
            cached = [r for b, rows in cache.items() if since <= b < read_from for r in rows] if use_cache else []
        try:
            fresh = self.state.metrics_get(res, read_from, queue)
        except NotImplementedError:
            return []
        final_hi = bucket_of(now - FINAL_AFTER - width, res) + width  # buckets below it are final
        with self._lock:
            groups: dict[int, list[MetricRow]] = {}
            for r in fresh:
                if r.bucket < final_hi:
                    groups.setdefault(r.bucket, []).append(r)
            cache.update(groups)  # replaced whole: a bucket read again is never counted twice
            if use_cache:
                assert covered is not None
                self._covered[key] = (covered[0], max(final_hi, covered[1]))
            else:
                self._covered[key] = (since, max(final_hi, since))
            oldest = bucket_of(now - RESOLUTIONS[res][1], res)
            for b in [b for b in cache if b < oldest]:
                del cache[b]
        return cached + fresh

    def series(self, queue: Optional[str], window: str, now: Optional[float] = None) -> list[Point]:
        """Chart points of ``queue`` (None: every queue summed) over ``window``: "60s", "60m", "24h", "10d"."""
        res, n = WINDOWS[window]
        return series(self.metric_rows(res, window_start(res, n, now), queue), res, n, now)

    def totals(self, queue: Optional[str] = None) -> dict:
        """Runs, failures, average and p50 / p95 run time over the day rows kept (15 days)."""
        return totals(self.metric_rows("d", window_start("d", RESOLUTIONS["d"][1] // 86400), queue))

    def _day_totals(self, queue: str, rows: list[MetricRow], now: float) -> dict:
        """totals() of a queue's day rows; the days before today are merged once per day and kept."""
        today = bucket_of(now, "d")
        key = (queue, today)
        with self._lock:
            past = self._past_days.get(key)
        if past is None:
            past = {}
            for r in rows:
                if r.bucket < today:
                    merge_into(past, r.data)
            with self._lock:
                if len(self._past_days) > 10000:
                    self._past_days.clear()
                self._past_days[key] = past
        acc: dict = {"r": past.get("r", 0), "f": past.get("f", 0), "c": past.get("c", 0.0), "h": dict(past.get("h", {}))}
        for r in rows:
            if r.bucket >= today:
                merge_into(acc, r.data)
        return totals([MetricRow("d", today, queue, "", acc)])

    def summaries(self, queues: Optional[list[str]] = None, with_sizes: bool = True) -> list[QueueSummary]:
        """The queues page: one summary per queue, from three reads of the state backend (catalog,
        heartbeats, metric rows) plus one size query per queue's broker."""
        catalog = self.catalog()
        consumers = self.state.live_consumers(None)
        names = sorted(set(catalog) | {c["queue"] for c in consumers if c.get("queue")})
        if queues is not None:
            names = [n for n in names if n in set(queues)]
        by_q: dict[str, list[dict]] = {}
        for c in consumers:
            by_q.setdefault(str(c.get("queue")), []).append(c)
        now = time.time()
        recent: dict[str, dict] = {}
        only = names[0] if queues is not None and len(names) == 1 else None  # one queue: read only its rows
        for row in self.metric_rows("s", int(now) - 10, only):
            acc = recent.setdefault(row.queue, {"r": 0, "f": 0})
            acc["r"] += int(row.data.get("r", 0))
            acc["f"] += int(row.data.get("f", 0))
        day_rows: dict[str, list[MetricRow]] = {}
        for row in self.metric_rows("d", window_start("d", 15, now), only):
            day_rows.setdefault(row.queue, []).append(row)
        out = []
        for q in names:
            rec = catalog.get(q, {})
            cs = by_q.get(q, [])
            flags = self.flags(q)
            size, err = self.sizes(q, SIZE_MAX_AGE) if with_sizes else (None, "not asked")
            if size is None and err and with_sizes and cs and cs[0].get("queue_size"):
                err = f"{err} (last sample from a consumer: {cs[0]['queue_size']})"
            tot = self._day_totals(q, day_rows.get(q, []), now)
            r10 = recent.get(q, {"r": 0, "f": 0})
            rate = r10["r"] / 10.0
            ready = size.ready if size is not None else None
            out.append(QueueSummary(
                queue=q, broker_kind=rec.get("broker_kind") or (cs[0].get("broker_kind") if cs else None),
                ready=ready, in_flight=size.in_flight if size else None, delayed=size.delayed if size else None,
                size_error=err, consumers=len(cs), paused=bool(flags.get("pause", False)),
                qps=flags.get("qps", rec.get("qps")),
                concurrent_num=flags.get("concurrent_num", rec.get("concurrent_num")),
                runs_10s=r10["r"], failures_10s=r10["f"], runs_total=tot["runs"], failures_total=tot["failures"],
                avg=tot["avg"], p95=tot["p95"], rate=rate,
                eta_drain=(ready / rate) if (ready and rate > 0) else (0.0 if ready == 0 else None), record=rec,
                applied=self.applied_all(q, flags=flags, consumers=cs), totals=tot))
        return out

    # ------------------------------------------------------------------ status records
    def status_table(self, queue: str) -> str:
        rec = self.record(queue) or {}
        return rec.get("status_table") or queue

    def search(self, queue: str, *, success: Optional[bool] = None, since: Optional[float] = None,
               until: Optional[float] = None, text: Optional[str] = None, task_id: Optional[str] = None,
               host: Optional[str] = None, before: Optional[tuple[float, str]] = None,
               limit: int = 50) -> list[dict]:
        """Status records of ``queue``, newest first; ``host`` and ``text`` are substring filters (the
        text is looked for in the record's arguments, result, exception, host)."""
        needle = text or host
        recs = self.state.search_statuses(self.status_table(queue), success=success, since=since, until=until,
                                          text=needle, task_id=task_id, before=before,
                                          limit=limit if not (text and host) else limit * 5)
        if host:
            recs = [r for r in recs if host in str(r.get("host", ""))]
        if text and host:
            from funboost.records import dumps_state
            recs = [r for r in recs if text in dumps_state(r)][:limit]
        return recs

    def task_timeline(self, queue: str, task_id: str) -> list[dict]:
        """Every record of ``task_id`` (one per run), oldest first, for the timeline."""
        recs = self.state.search_statuses(self.status_table(queue), task_id=task_id, limit=1000)
        return sorted(recs, key=lambda r: r.get("time_start") or 0.0)

    # ------------------------------------------------------------------ dead letters
    def dead_letters(self, queue: str, action: str, flt: Optional[DeadLetterFilter] = None, *,
                     limit: Optional[int] = None, edit: Optional[Callable[[dict], dict]] = None,
                     who: str = "", audit: bool = True) -> DeadLetterResult:
        """Browse (``list``), ``count``, ``retry`` or ``delete`` the dead letters of ``queue`` that match
        ``flt``; ``edit`` (retry only) returns the new keyword arguments of a message. Retries and deletes
        are written to the audit log."""
        res = dead_letter_action(self.broker(queue), action, flt or DeadLetterFilter(), limit=limit, edit=edit)
        if audit and action in ("retry", "delete"):
            audit_log(self.state, who or "?", f"dead_letters.{action}", queue, res.matched,
                      {"filter": (flt or DeadLetterFilter()).as_dict(), "edited": edit is not None})
        return res

    def close(self) -> None:
        with self._lock:
            brokers = [b for _, b in self._brokers.values()]
            self._brokers.clear()
        for b in brokers:
            try:
                b.close()
            except Exception:
                pass
