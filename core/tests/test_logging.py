"""Per-queue loggers with the task id on every record, periodic throughput lines, console/file switches."""
import logging

from funboost import BoosterParams, boost, fct
from funboost.testing import wait_until


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_task_id_on_records_stats_line_and_file_log(qname, tmp_path):
    log_file = tmp_path / "q.log"

    @boost(BoosterParams(queue_name=qname, broker_kind="memory", state_backend="memory", log_to_console=False,
                         log_filename=str(log_file), stats_log_interval=1.0))
    def work(x):
        fct.logger.info("working on %s", x)

    h = _Collect()
    work.logger.addHandler(h)
    work.consume()
    try:
        r = work.push(7)
        wait_until(lambda: any("working on 7" in rec.getMessage() for rec in h.records), 10)
        rec = next(rec for rec in h.records if "working on 7" in rec.getMessage())
        assert rec.task_id == r.task_id
        wait_until(lambda: any("runs in the last" in rec.getMessage() for rec in h.records), 10,
                   message="periodic stats line")
        stats = next(rec.getMessage() for rec in h.records if "runs in the last" in rec.getMessage())
        assert "failed" in stats and "avg" in stats
        wait_until(lambda: log_file.exists() and r.task_id in log_file.read_text(), 10, message="file log")
    finally:
        work.stop_consume(5)
    # console output is off: no StreamHandler to stderr was installed on this queue's logger
    assert not [x for x in work.logger.handlers if type(x) is logging.StreamHandler]


def test_throttled_log_logs_the_first_then_one_line_per_interval_with_the_count_left_out():
    from funboost.logs import ThrottledLog

    logger = logging.getLogger("funboost.test_throttled")
    h = _Collect()
    logger.addHandler(h)
    now = [100.0]
    try:
        warn = ThrottledLog(logger, every=10.0, clock=lambda: now[0])
        assert warn("commit of %s failed: %r", "t", "E1") is True  # the first one at once
        for i in range(44):  # the rest of an outage's burst within the interval: counted, not logged
            now[0] += 0.05
            assert warn("commit of %s failed: %r", "t", f"E{i}") is False
        now[0] = 110.0  # the interval is over: one line, which says how many were left out
        assert warn("commit of %s failed: %r", "t", "E99") is True
        now[0] = 125.0  # nothing left out since: the plain line
        assert warn("commit of %s failed: %r", "t", "E100") is True
    finally:
        logger.removeHandler(h)
    lines = [r.getMessage() for r in h.records]
    assert lines == ["commit of t failed: 'E1'",
                     "commit of t failed: 'E99' (and 44 more like it since the previous line, not logged)",
                     "commit of t failed: 'E100'"]
    assert all(r.levelno == logging.WARNING for r in h.records)
    assert all(r.funcName == "test_throttled_log_logs_the_first_then_one_line_per_interval_with_the_count_left_out"
               for r in h.records)  # the caller's location, not ThrottledLog's
