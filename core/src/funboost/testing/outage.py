"""A graceful stop during a broker outage, with nothing running, must not wait for the broker's reconnect
timeout: the consumer's metrics thread samples queue_size() (which meets the outage) and the stop joins that
thread. One scenario for every broker kind with a reconnect loop (postgres, sqlalchemy ...); each plugin's
test calls :func:`assert_graceful_stop_during_outage_is_prompt` with a config pointing at a dead port."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

__all__ = ["assert_graceful_stop_during_outage_is_prompt"]

#: seconds the consumer runs before its SIGTERM: past a metrics flush (5 s), whose queue_size() meets the outage
RUN_BEFORE_SIGTERM = 8.0
#: how long the stop may take after the SIGTERM
STOP_LIMIT = 15.0

_SCRIPT = textwrap.dedent('''
    import json, os, signal, sys, threading, time
    from funboost import BoosterParams, boost
    @boost(BoosterParams(queue_name="outage_stop", broker_kind=sys.argv[1],
                         broker_exclusive_config=json.loads(sys.argv[2])))
    def f(x):
        return x
    f.consume()
    def later():
        time.sleep(float(sys.argv[3]))  # the scenario's run time (not synchronisation)
        print("SIGTERM", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=later, daemon=True).start()
''')


def assert_graceful_stop_during_outage_is_prompt(tmp_path: Path, broker_kind: str, config: dict[str, Any]) -> None:
    """Run a consumer of ``broker_kind`` with ``config`` (its server unreachable) in a subprocess, SIGTERM it
    after :data:`RUN_BEFORE_SIGTERM` seconds, and assert that it exits 0 within :data:`STOP_LIMIT` seconds."""
    script = tmp_path / "outage_stop.py"
    script.write_text(_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), broker_kind, json.dumps(config), str(RUN_BEFORE_SIGTERM)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    t0 = time.monotonic()
    out, _ = p.communicate(timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, out
    assert "SIGTERM" in out
    assert took < RUN_BEFORE_SIGTERM + STOP_LIMIT, (
        f"stop took {took - RUN_BEFORE_SIGTERM:.1f}s after SIGTERM with nothing running\n{out[-2000:]}")
