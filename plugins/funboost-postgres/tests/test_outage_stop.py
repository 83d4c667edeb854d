"""A graceful stop during a PostgreSQL outage, with nothing running, must not wait for reconnect_timeout:
the consumer's metrics thread samples queue_size() and the stop joins that thread."""
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent('''
    import os, signal, threading, time
    from funboost import BoosterParams, boost
    @boost(BoosterParams(queue_name="outage_stop", broker_kind="POSTGRES",
                         broker_exclusive_config={"dsn": "postgresql://postgres@127.0.0.1:1/x"}))
    def f(x):
        return x
    f.consume()
    def later():
        time.sleep(8)  # past a metrics flush (5 s), whose queue_size() meets the outage
        print("SIGTERM", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=later, daemon=True).start()
''')


def test_graceful_stop_during_outage_is_prompt(tmp_path):
    script = tmp_path / "outage_stop.py"
    script.write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=tmp_path)
    t0 = time.monotonic()
    out, _ = p.communicate(timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, out
    assert "SIGTERM" in out
    assert took < 8 + 15, f"stop took {took - 8:.1f}s after SIGTERM with nothing running\n{out[-2000:]}"
