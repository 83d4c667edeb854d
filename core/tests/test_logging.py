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
