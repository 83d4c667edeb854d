"""Instructions per ``sync_call`` spent by the serving process (valgrind's callgrind), the tcp kind's consumer
against bench/tcp_bench.py's raw asyncio server, both called sequentially from this process.

    python bench/tcp_instructions_bench.py [--n 500] [--sides raw,tcp]

The server runs under ``valgrind --tool=callgrind --instr-atstart=no``; after ``--warm`` calls (connection,
caches) instrumentation is switched on (``callgrind_control -i on``) for ``--n`` calls, then the counters
are dumped (``callgrind_control -d``). All threads of the server process are counted. Wall-clock figures on
the shared 2-core machine swing; instruction counts do not.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tcp_bench  # noqa: E402


def count(side: str, n: int, warm: int, settle: float) -> float:
    port = tcp_bench.free_port()
    queue = f"{tcp_bench.QUEUE}_cg"
    with tempfile.TemporaryDirectory(prefix="tcpcg-") as d:
        out = os.path.join(d, "cg.out")
        kind = "raw" if side == "raw" else "TCP"
        extra = os.environ.get("CALLGRIND_ARGS", "").split()
        keep = os.environ.get("CALLGRIND_KEEP")
        if keep:
            out = keep
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *extra,
                              sys.executable, tcp_bench.__file__, "--serve", kind, "--port", str(port),
                              "--queue", queue], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert p.stdout is not None
            if not p.stdout.readline().startswith("READY"):
                raise SystemExit(f"{side}: server did not start")
            if side == "raw":
                client = tcp_bench.RawClient(port)
                call = client.call
            else:
                booster = tcp_bench.make_booster("TCP", port, queue)
                call = lambda x, y: booster.sync_call(x, y, timeout=60)  # noqa: E731
            for i in range(warm):
                assert call(i, 1) == i + 1
            time.sleep(settle)  # one-off work after start-up (lazy imports of the engine's threads) is not counted
            subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True)
            for i in range(n):
                call(i, 1)
            subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
            total = 0
            time.sleep(0.5)
            for f in glob.glob(out + "*"):
                with open(f) as fh:
                    for line in fh:
                        m = re.match(r"(?:summary|totals): (\d+)", line)
                        if m:
                            total += int(m.group(1))
                            break
            return total / n
        finally:
            p.kill()
            p.wait()


def main() -> None:
    import logging
    logging.disable(logging.INFO)
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--sides", default="raw,tcp")
    ap.add_argument("--settle", type=float, default=5.0)
    a = ap.parse_args()
    for side in a.sides.split(","):
        print(f"{side:5s} server: {count(side, a.n, a.warm, a.settle):12,.0f} instructions per sync_call "
              f"({a.n} sequential calls after {a.warm} warm-up calls, all threads)", flush=True)


if __name__ == "__main__":
    main()
