"""concurrent_mode="eventlet" on the postgres kind: psycopg's C wait must not freeze the eventlet hub."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import eventlet; eventlet.monkey_patch()
    import os, sys, time
    from funboost import boost, BoosterParams
    done = []

    @boost(BoosterParams(queue_name=sys.argv[1], broker_kind="postgres", concurrent_mode="eventlet",
                         concurrent_num=20, log_level=30))
    def f(x):
        time.sleep(0.02)
        done.append(x)

    for i in range(100):
        f.push(i)
    f.consume()
    t0 = time.time()
    while len(done) < 100 and time.time() - t0 < 30:
        time.sleep(0.2)
    print("DONE", len(done), flush=True)
    os._exit(0)
""")


def test_eventlet_consumer_does_not_freeze_the_hub(tmp_path, queue_name):
    pytest.importorskip("eventlet")
    script = tmp_path / "ev.py"
    script.write_text(SCRIPT)
    try:
        out = subprocess.run([sys.executable, str(script), queue_name], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=dict(os.environ, FUNBOOST_NO_SIGNAL_HANDLERS="1"))
    except subprocess.TimeoutExpired:  # the hub froze: even the main thread's sleep never returned
        pytest.fail("eventlet consumer on postgres hung (psycopg's blocking C wait froze the hub)")
    assert "DONE 100" in out.stdout, out.stdout + out.stderr[-3000:]
