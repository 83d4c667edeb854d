"""The web manager at scale (issue 22's performance targets).

Part 1, pages: 100 queues (catalog records, 2 consumer heartbeats each, metric rows for every chart window)
and 1,000,000 status records in the sqlite state backend; the manager on uvicorn; each page fetched
``--rounds`` times with a logged-in session; p50 / p95 per page (target: p95 < 300 ms).

Part 2, polling cost: a consumer process runs ``--n`` trivial tasks on the sqlite broker (status records on)
with the manager closed and with it open and polled like a browser tab (the queues page and the charts'
JSON every second), in alternating rounds; median throughput of each (target: < 2 % lower when open).

    .venv/bin/python bench/web_bench.py [--records 1000000] [--rounds 20] [--n 20000] [--pairs 3]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

PASSWORD = "bench password 123"


def _port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _start_manager(env: dict) -> tuple[subprocess.Popen, str]:
    port = _port()
    p = subprocess.Popen([sys.executable, "-m", "funboost_web", "--port", str(port), "--admin-password", PASSWORD],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "serving" in line:
            break
    threading.Thread(target=p.stdout.read, daemon=True).start()
    import httpx
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # "serving" is printed before uvicorn binds: wait until it answers
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return p, url


def _login(url: str):
    import httpx
    c = httpx.Client(base_url=url, timeout=60)
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf": csrf, "next": "/queues"})
    assert r.status_code in (200, 303), r.status_code
    return c


# ------------------------------------------------------------------------------------------- part 1
def seed(n_records: int, n_queues: int = 100) -> tuple[str, str]:
    """Fill the state backend; returns (a queue name, a rare text found in one record of it)."""
    from funboost.admin.catalog import CATALOG
    from funboost.records import StatusBatch
    from funboost.state.base import get_state_backend
    from funboost.timeseries import WINDOWS, MetricRow, hist_index, window_start, RESOLUTIONS
    state = get_state_backend("sqlite")
    now = time.time()
    per_q = n_records // n_queues
    rare = f"needle-{uuid.uuid4().hex[:8]}"
    t_seed = time.monotonic()
    for qi in range(n_queues):
        q = f"bench_q{qi:03d}"
        state.doc_put(CATALOG, q, {"queue": q, "broker_kind": "sqlite", "broker_options": {}, "redacted": [],
                                   "function": "f", "arg_names": ["x", "user"], "required_args": ["x"],
                                   "qps": None, "concurrent_num": 50, "status_table": q, "updated": now})
        for ci in range(2):
            cid = f"{q}@benchhost:{1000 + ci}:{qi}"
            state.heartbeat(cid, q, {"host": "benchhost", "ip": "10.0.0.1", "pid": 1000 + ci, "broker_kind": "sqlite",
                                     "concurrent_num": 50, "qps": None, "rate": 12.5, "total_runs": 1000,
                                     "total_fail": 3, "paused": False, "started": now - 3600}, 3600)
            rows = []
            for window, (res, nb) in WINDOWS.items():
                width = RESOLUTIONS[res][0]
                for b in range(nb):
                    bucket = window_start(res, nb, now) + b * width
                    r = random.randint(5, 50) * width // 1 if res != "s" else random.randint(5, 50)
                    rows.append(MetricRow(res, bucket, q, cid, {"r": r, "f": r // 50, "c": r * 0.01,
                                                               "h": {str(hist_index(0.01)): r}, "d": random.randint(0, 500)},
                                          MetricRow.ttl_of(res)))
            state.metrics_put(rows)
        t0 = now - per_q * 0.01
        for b in range(0, per_q, 1000):
            recs = []
            for i in range(b, min(per_q, b + 1000)):
                ts = t0 + i * 0.01
                tid = f"{qi:03d}-{i:08d}-{uuid.uuid4().hex[:12]}"
                if i % 100 == 7:
                    text = rare if (qi == 50 and i == per_q // 3 + 7 - (per_q // 3) % 100) else f"ValueError: bad {i}"
                    recs.append([tid, ts, ts + 0.01, 1, False, "finish", {"x": i, "user": f"u{i % 5000}"}, ts - 1,
                                 "t", q, "benchhost", 1000, None, text, "ValueError", text, False, None])
                else:
                    recs.append([tid, ts, ts + 0.01, 1, True, "finish", {"x": i, "user": f"u{i % 5000}"}, ts - 1, "t",
                                 q, "benchhost", 1000])
            state.save_status_batch(q, StatusBatch(recs), 7 * 86400)
    print(f"seeded {n_queues} queues, {per_q * n_queues:,} status records in {time.monotonic() - t_seed:.0f} s",
          flush=True)
    return "bench_q050", rare


def part_pages(args: argparse.Namespace, env: dict) -> None:
    os.environ.update(env)
    q, rare = seed(args.records)
    proc, url = _start_manager(env)
    try:
        c = _login(url)
        time.sleep(3)  # let the warm-up (brokers of 100 queues, final metric buckets) finish first
        some_tid = c.get("/api/results", params={"queue": q, "limit": 1}).json()["records"][0]["task_id"]
        pages = [("/queues", "queues (100 queues)"), (f"/queues/{q}", "queue detail"),
                 (f"/results?queue={q}", "results, newest 50"),
                 (f"/results?queue={q}&status=failure", "results, failures"),
                 (f"/results?queue={q}&text={rare}", "results, text in 1 of 1M"),
                 (f"/results?queue={q}&task_id={some_tid}", "results, by task id"),
                 (f"/api/results?queue={q}&before=" + "{before}", "results, page 2 (cursor)"),
                 (f"/api/series?queue={q}&window=60s", "chart data, queue, 60 s"),
                 ("/api/series?window=60m", "chart data, all queues, 60 min"),
                 ("/api/series?window=10d", "chart data, all queues, 10 days"),
                 ("/consumers", "consumers (200)"), ("/metrics", "/metrics (100 queues)"), ("/charts", "charts page")]
        first = c.get("/api/results", params={"queue": q}).json()
        before = f"{first['records'][-1]['time_start']!r}|{first['records'][-1]['task_id']}"
        print(f"\n{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst = 0.0
        for path, label in pages:
            path = path.replace("{before}", before)
            times = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                r = c.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            if "text=" in path:
                assert rare in r.text, "the rare record was not found"
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
            worst = max(worst, p95)
            print(f"{label:<36} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}", flush=True)
        print(f"\nworst p95: {worst:.0f} ms (target < 300 ms): {'met' if worst < 300 else 'NOT met'}")
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------------------------- part 2
CONSUMER = r"""
import os, sys, time
from funboost import BoosterParams, FunctionResultStatusPersistenceConfig, boost
n, q = int(sys.argv[1]), sys.argv[2]
done = [0]
@boost(BoosterParams(queue_name=q, broker_kind="sqlite_queue", log_to_console=False, concurrent_num=50,
       function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(is_save_status=True)))
def f(x):
    done[0] += 1
for i in range(0, n, 1000):
    f.publish_many([{"x": j} for j in range(i, min(n, i + 1000))]) if hasattr(f, "publish_many") else [f.push(j) for j in range(i, min(n, i + 1000))]
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c0 = time.perf_counter(), cpu()
f.consume()
while done[0] < n:
    time.sleep(0.005)
el, c1 = time.perf_counter() - t, cpu()
f.stop_consume(10)
print("RATE", n / el, "CPU", (c1 - c0) / n * 1e6, flush=True)
"""


def _consume_round(n: int, env: dict) -> float:
    q = f"webbench_{uuid.uuid4().hex[:8]}"
    out = subprocess.run([sys.executable, "-c", CONSUMER, str(n), q], env=env, capture_output=True, text=True,
                         timeout=900)
    m = re.search(r"RATE ([\d.]+) CPU ([\d.]+)", out.stdout)
    assert m, out.stderr[-2000:]
    return float(m.group(1)), float(m.group(2))


def part_polling(args: argparse.Namespace, env: dict) -> None:
    """Alternating rounds (closed, open, open, closed, ...): throughput and the consumer process's own CPU
    time per message (user + sys; what the manager's reads cost the consumer, less sensitive than
    throughput to the other load of a shared host)."""
    closed: list = []
    opened: list = []
    for i in range(args.pairs):
        for mode in (("closed", "open") if i % 2 == 0 else ("open", "closed")):
            if mode == "closed":
                closed.append(_consume_round(args.n, env))
                print(f"  round {i + 1} closed: {closed[-1][0]:,.0f} msg/s, {closed[-1][1]:.1f} us CPU/msg", flush=True)
                continue
            proc, url = _start_manager(env)
            stop = threading.Event()
            polls = [0]

            def poll() -> None:
                c = _login(url)
                while not stop.is_set():
                    c.get("/queues", params={"_partial": "1"})  # what an open queues tab fetches
                    for q in [x["queue"] for x in c.get("/api/queues").json()["queues"]][-1:]:
                        c.get("/api/series", params={"queue": q, "window": "60s"})  # and a chart
                    polls[0] += 1
                    stop.wait(1.0)

            th = threading.Thread(target=poll, daemon=True)
            th.start()
            try:
                opened.append(_consume_round(args.n, env))
            finally:
                stop.set()
                th.join(10)
                proc.terminate()
                proc.wait(10)
            print(f"  round {i + 1} open:   {opened[-1][0]:,.0f} msg/s, {opened[-1][1]:.1f} us CPU/msg "
                  f"({polls[0]} polls)", flush=True)
    mc, mo = statistics.median(r for r, _ in closed), statistics.median(r for r, _ in opened)
    cc, co = statistics.median(c for _, c in closed), statistics.median(c for _, c in opened)
    cost = (mc - mo) / mc * 100
    print(f"\nconsumer throughput, manager closed: {mc:,.0f} msg/s; open and polled every second: {mo:,.0f} msg/s "
          f"({cost:+.1f} % cost; target < 2 %)")
    print(f"consumer CPU per message, closed: {cc:.1f} us; open: {co:.1f} us ({(co - cc) / cc * 100:+.1f} %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--skip-pages", action="store_true")
    ap.add_argument("--skip-polling", action="store_true")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="funboost-web-bench-")
    env = {**os.environ, "FUNBOOST_DATA_DIR": d, "FUNBOOST_STATE_BACKEND": "sqlite",
           "FUNBOOST_STATE_SQLITE_PATH": os.path.join(d, "state.sqlite3"), "FUNBOOST_LOG_TO_CONSOLE": "0"}
    if not args.skip_pages:
        part_pages(args, env)
    if not args.skip_polling:
        env2 = {**env, "FUNBOOST_STATE_SQLITE_PATH": os.path.join(d, "state2.sqlite3")}
        part_polling(args, env2)


if __name__ == "__main__":
    main()
