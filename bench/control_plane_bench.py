"""Control-plane benchmark: RPC round-trip latency and the cost of status records.

    python bench/control_plane_bench.py [--rpc-n 300] [--n 20000] [--skip-rpc] [--skip-status]

1. RPC round trip (p50 / p99 / mean, ms): ``f.push(x).get()`` one at a time, the consumer in a child
   process; sqlite broker + sqlite state, and redis_ack_able broker + redis state.
2. Consume throughput (msg/s) of a trivial function with status records off vs on (records written to
   the state backend in batches), on the memory broker (where the per-message overhead shows most) and
   on redis_ack_able. Target: records cost at most 15 %.

Numbers on a noisy 2-core machine: read them as +-30 %.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

os.environ.setdefault("FUNBOOST_DATA_DIR", tempfile.mkdtemp(prefix="funboost-cp-bench-"))
os.environ.setdefault("FUNBOOST_NO_KEEPALIVE", "1")
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")


WORK_S = 0.0  # per-task simulated I/O (seconds); set by --work-ms


def echo(x: int) -> int:
    if WORK_S:
        time.sleep(WORK_S)
    return x


def make(queue: str, broker: str, state: str, rpc: bool = False, status: bool = False, concurrency: int = 50):
    from funboost import BoosterParams, boost
    from funboost.params import FunctionResultStatusPersistenceConfig
    return boost(BoosterParams(
        queue_name=queue, broker_kind=broker, state_backend=state, is_using_rpc_mode=rpc,
        concurrent_num=concurrency, log_to_console=False, max_retry_times=0,
        function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(is_save_status=status)))(echo)


def child(cfg: dict) -> None:
    f = make(cfg["queue"], cfg["broker"], cfg["state"], rpc=True, concurrency=8)
    f.consume()
    while not os.path.exists(cfg["stop"]):
        time.sleep(0.1)
    f.stop_consume(5)


def available(broker: str, state: str) -> str | None:
    from funboost.plugins.manager import resolve_broker_kind
    from funboost.state.base import resolve_state_backend_class
    try:
        resolve_broker_kind(broker)
        return resolve_state_backend_class(state).check_available(None)
    except Exception as exc:
        return str(exc)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench_rpc(broker: str, state: str, n: int) -> None:
    reason = available(broker, state)
    if reason:
        print(f"  {broker:>15} + {state:<7} state: skipped ({reason})")
        return
    queue = f"bench_rpc_{uuid.uuid4().hex[:8]}"
    stop = os.path.join(os.environ["FUNBOOST_DATA_DIR"], f"stop_{queue}")
    cfg = {"queue": queue, "broker": broker, "state": state, "stop": stop}
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(cfg)])
    f = make(queue, broker, state, rpc=True)
    try:
        for i in range(20):  # warm-up: consumer started, connections open
            f.push(i).get(timeout=60)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            assert f.push(i).get(timeout=30) == i
            lat.append((time.perf_counter() - t0) * 1000)
        print(f"  {broker:>15} + {state:<7} state: p50 {pct(lat, 50):6.2f} ms   p99 {pct(lat, 99):6.2f} ms   "
              f"mean {statistics.mean(lat):6.2f} ms   (n={n})")
    finally:
        open(stop, "w").close()
        proc.wait(30)
        f.clear()


LAST_CPU_US = [0.0]  # process CPU per message of the last bench_consume run


def bench_consume(broker: str, state: str, n: int, status: bool) -> float:
    queue = f"bench_st_{uuid.uuid4().hex[:8]}"
    f = make(queue, broker, state, status=status)
    f.publish_many({"x": i} for i in range(n))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    f.consume()
    c = f.consumer
    while c.stats.total_runs < n:
        time.sleep(0.005)
    if c.status_saver is not None:
        c.status_saver.flush()  # the records are part of the cost: count until they are written
    elapsed = time.perf_counter() - t0
    LAST_CPU_US[0] = (time.process_time() - cpu0) / n * 1e6
    f.stop_consume(10)
    if status:  # checked in another process: reading 20k+ records here would disturb the next rounds
        out = subprocess.run([sys.executable, __file__, "--count-statuses", json.dumps([queue, broker, state, n])],
                             check=True, capture_output=True, text=True).stdout
        got = int(out.split()[-1])
        assert got == n, f"{got} status records for {n} runs"
    f.clear()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--count-statuses")
    ap.add_argument("--rpc-n", type=int, default=300)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-rpc", action="store_true")
    ap.add_argument("--skip-status", action="store_true")
    ap.add_argument("--work-ms", default="0,1", help="per-task simulated I/O in ms, comma-separated variants")
    ap.add_argument("--interleaved", type=int, default=0, metavar="R",
                    help="instead of best-of-rounds: R rounds alternating off and on, medians of rates and of "
                         "process CPU per message (steadier on a noisy host)")
    a = ap.parse_args()
    global WORK_S
    if a.child:
        child(json.loads(a.child))
        return
    if a.count_statuses:
        queue, broker, state, n = json.loads(a.count_statuses)
        print(len(make(queue, broker, state, status=True).query_statuses(limit=n)))
        return
    if not a.skip_rpc:
        print("RPC round trip, push(x).get(), consumer in another process:")
        bench_rpc("sqlite_queue", "sqlite", a.rpc_n)
        bench_rpc("redis_ack_able", "redis", a.rpc_n)
    if not a.skip_status:
        how = f"{a.interleaved} interleaved rounds" if a.interleaved else f"best of {a.rounds}"
        print(f"consume throughput, status records off vs on (n={a.n}, {how}, concurrency 50):")
        for work_ms in (float(x) for x in a.work_ms.split(",")):
            WORK_S = work_ms / 1000
            label = "trivial function" if not work_ms else f"function with {work_ms:g} ms of I/O"
            print(f" {label}:")
            for broker, state in (("memory", "sqlite"), ("redis_ack_able", "redis"), ("redis_ack_able", "sqlite")):
                reason = available(broker, state)
                if reason:
                    print(f"  {broker:>15} + {state:<7}: skipped ({reason})")
                    continue
                if a.interleaved:
                    runs: dict = {False: [], True: []}
                    for _ in range(a.interleaved):
                        for status in (False, True):
                            runs[status].append((bench_consume(broker, state, a.n, status), LAST_CPU_US[0]))
                    off, on = (statistics.median(r for r, _ in runs[k]) for k in (False, True))
                    cpu_off, cpu_on = (statistics.median(c for _, c in runs[k]) for k in (False, True))
                    # each "on" round against the "off" round just before it: slow drifts of a shared host
                    # cancel out of these better than out of the ratio of the medians
                    pairs = sorted((1 - n / f) * 100 for (f, _), (n, _) in zip(runs[False], runs[True]))
                    print(f"  {broker:>15} + {state:<7} process CPU per message: off {cpu_off:5.1f} us, "
                          f"on {cpu_on:5.1f} us (medians of {a.interleaved} interleaved rounds); cost per "
                          f"round pair: median {statistics.median(pairs):.1f} %, "
                          f"range {pairs[0]:.1f} to {pairs[-1]:.1f} %")
                else:
                    off = max(bench_consume(broker, state, a.n, False) for _ in range(a.rounds))
                    on = max(bench_consume(broker, state, a.n, True) for _ in range(a.rounds))
                cost = (1 - on / off) * 100
                print(f"  {broker:>15} + {state:<7} state: off {off:8.0f} msg/s   on {on:8.0f} msg/s   "
                      f"records cost {cost:5.1f} %  {'OK' if cost <= 15 else 'over the 15 % target'}")

if __name__ == "__main__":
    main()
