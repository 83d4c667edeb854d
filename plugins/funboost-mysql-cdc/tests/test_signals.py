"""Ctrl-C (SIGINT to the process group) and SIGTERM to the process group of a consumer with the default
reader="process": one graceful stop, no KeyboardInterrupt traceback from the reader process, no "reader
process failed" / "starting another" during the shutdown, and the reader process ends with its parent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import CONN, wait_for
from test_crash_restart import insert, seen, wait_checkpoint
from test_reader_process import alive, children_of, is_reader

# the engine's consumer, logging to stderr (the warnings of funboost.mysql_cdc included)
WORKER = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from funboost import BoosterParams, boost
queue, out_path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = open(out_path, "a", buffering=1)

@boost(BoosterParams(queue_name=queue, broker_kind="MYSQL_CDC", concurrent_num=4,
                     broker_exclusive_config=options))
def on_row(schema, table, event, binlog, timestamp, values=None, before=None, after=None):
    out.write(f"{values['id']}\\n")

on_row.consume()
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_stops_gracefully(mariadb_available, queue_name, schema, tmp_path, signum):
    out = str(tmp_path / "seen.log")
    opts = {**CONN, "schemas": [schema], "tables": ["items"], "reconnect_backoff_initial": 0.05}
    # a session of its own: killpg is what a terminal's Ctrl-C (or `docker stop` of a shell) does
    p = subprocess.Popen([sys.executable, "-c", WORKER, queue_name, out, json.dumps(opts)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_checkpoint(queue_name)
        insert(schema, range(0, 20))
        wait_for(lambda: len(seen(out)) >= 20, 60, "rows flowing")
        readers = [c for c in children_of(p.pid) if is_reader(c)]
        assert len(readers) == 1, readers
        os.killpg(p.pid, signum)
        _, err = p.communicate(timeout=60)
        wait_for(lambda: not alive(readers[0]), 10, "the reader process to end with its parent")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "reader process failed" not in err, err[-3000:]
    assert "starting another" not in err and "reader process ended" not in err, err[-3000:]
    assert "stopping consumers gracefully" in err, err[-3000:]


def test_no_reader_process_is_started_once_the_process_shuts_down(brokers, queue_name, schema, monkeypatch,
                                                                     caplog):
    """A reader process that ends while the process is shutting down (its graceful stop closes the broker
    soon) is not replaced."""
    from funboost import keepalive
    b = brokers(queue_name, schemas=[schema], reconnect_backoff_initial=0.05)
    assert b.fetch(10, 0.2) == []
    first, reader = b._child, b._reader
    assert first is not None and reader is not None
    # what SIGINT / SIGTERM set: a state of this test's own (a running watcher thread keeps waiting on the
    # original one, so nothing drains or exits this process)
    state = keepalive._ShutdownState()
    state.requested.set()
    monkeypatch.setattr(keepalive, "_shutdown", state)
    assert keepalive.shutdown_requested()
    first.kill()
    wait_for(lambda: not reader.is_alive(), 10, "the relay to end without starting another reader")
    assert b._child is None
    assert not [r for r in caplog.records if "starting another" in r.getMessage()]
