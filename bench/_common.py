"""Shared helpers for the scripts in ``bench/``: result lines, peak RSS, fresh-process parts, running the
original funboost 55.0 in its own virtualenv, repeated samples with a spread; and the measuring code the
benches have in common (counting a no-op task's runs, the publish / consume timing loops, CPU per message,
the framework benches' best-of-rounds tables), so every side of a comparison is timed by the same code.

Every measured part runs in a fresh child process (so one part's threads, caches and memory never leak
into the next) and reports one line ``BENCHRESULT {json}`` on stdout, with the child's peak RSS added.
The line is written with ``os.write`` because the original funboost (nb_log) replaces ``print``. Only the
standard library is imported at module level: scripts run under the original's virtualenv import it too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

RESULT_TAG = "BENCHRESULT "
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# Where to look for the original funboost 55.0 (FUNBOOST_ORIG_PYTHON wins): the venv that
# ``python bench/run_all.py --setup-only`` creates.
ORIG_PYTHON_CANDIDATES = (os.path.join(BENCH_DIR, ".venvs", "orig", "bin", "python"),)


# ---------------------------------------------------------------- inside a child process
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def _stat_cpu_seconds(stat: str) -> float:
    """utime + stime of a /proc/PID/stat text, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc): the share of a server or child
    process, which this process's own clocks do not see."""
    with open(f"/proc/{pid}/stat") as f:
        return _stat_cpu_seconds(f.read())


def named_processes_cpu(name: str) -> float:
    """CPU seconds so far of every local process whose command is ``name`` (``beam.smp``, ``redis-server``),
    nan if none can be read. The machine is shared: CPU per message is much less sensitive to the others'
    load than rates are."""
    total, found = 0.0, False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        if f"({name})" in stat:
            total += _stat_cpu_seconds(stat)
            found = True
    return total if found else float("nan")


def emit(result: dict[str, Any]) -> None:
    """Report a part's figures to the parent (adds ``rss_mb``)."""
    out = dict(result)
    out.setdefault("rss_mb", round(peak_rss_mb(), 1))
    os.write(1, ("\n" + RESULT_TAG + json.dumps(out) + "\n").encode())


def finish_child() -> None:
    """Leave at once: consumer threads are not daemons in the original funboost."""
    sys.stdout.flush()
    os._exit(0)


def report_and_exit(part: Any, *args: Any) -> None:
    """The whole of a ``--part`` process: report ``part(*args)`` (:func:`emit`) and leave at once."""
    emit(part(*args))
    finish_child()


# ---------------------------------------------------------------- in the parent
def parse_result(stdout: str) -> Optional[dict]:
    for line in reversed(stdout.splitlines()):
        if RESULT_TAG in line:
            # strip any colour codes a patched print may have added
            return json.loads(line.split(RESULT_TAG, 1)[1].split("\x1b")[0].strip())
    return None


#: where the bench's child processes cache bytecode (never inside the checkout)
PYCACHE_DIR = os.path.join(tempfile.gettempdir(), "funboost-bench-pycache")


def scratch_env(d: str, **extra: str) -> dict[str, str]:
    """Environment for a child: data directories inside the scratch dir ``d`` (never the user's)."""
    env = dict(os.environ)
    env.update(FUNBOOST_DATA_DIR=os.path.join(d, "data"), FUNBOOST_SQLITE_DIR=os.path.join(d, "queues"),
               FUNBOOST_STATE_SQLITE_PATH=os.path.join(d, "data", "state.sqlite3"),
               FUNBOOST_LOG_TO_CONSOLE="0", PYTHONPYCACHEPREFIX=PYCACHE_DIR)
    # Bytecode is cached (outside the checkout, in PYCACHE_DIR) even where PYTHONDONTWRITEBYTECODE is set:
    # a pip-installed package (the original funboost in its venv) has its .pyc files from the install,
    # while an editable checkout without them compiles every module it imports again in every fresh
    # process (~17 ms of a consumer's start-up, timed inside the consume figures).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def _run_for_result(cmd: list[str], d: str, env: dict[str, str], timeout: float, what: str) -> Optional[dict]:
    """Run ``cmd`` in the scratch dir ``d`` and parse its ``BENCHRESULT`` line; None (the reason on stderr)
    when it timed out or printed none. One place, so a fresh part and an original's part fail alike."""
    try:
        p = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"{what} timed out after {timeout}s\n")
        return None
    res = parse_result(p.stdout)
    if res is None:
        sys.stderr.write(f"{what} failed (rc={p.returncode}):\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}\n")
    return res


def run_part(script: str, name: str, *args: Any, python: Optional[str] = None,
             timeout: float = 1800) -> Optional[dict]:
    """Run ``python script --part name args...`` in a fresh process and a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="funboost-bench-") as d:
        cmd = [python or sys.executable, script, "--part", name, *map(str, args)]
        return _run_for_result(cmd, d, scratch_env(d), timeout, f"part {name} {args}")


def find_original_python() -> Optional[str]:
    """The python of a virtualenv holding funboost==55.0, or None."""
    env = os.environ.get("FUNBOOST_ORIG_PYTHON")
    for cand in ([env] if env else []) + list(ORIG_PYTHON_CANDIDATES):
        if cand and os.path.exists(cand):
            try:
                v = subprocess.run([cand, "-c", "import importlib.metadata as m; print(m.version('funboost'))"],
                                   capture_output=True, text=True, timeout=60).stdout.strip()
            except Exception:
                continue
            if v == "55.0":
                return cand
    return None


#: the original's RabbitMQ settings for the loopback server (its defaults point elsewhere)
ORIG_RABBITMQ_SETTINGS: dict[str, Any] = {
    "RABBITMQ_USER": "guest", "RABBITMQ_PASS": "guest", "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": 5672,
    "RABBITMQ_VIRTUAL_HOST": "", "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/"}


def original_config(settings: Mapping[str, Any]) -> str:
    """The text of a ``funboost_config.py`` for the original funboost 55.0 (it imports that module from its
    project root): its ``BrokerConnConfig`` with ``settings`` set, its ``FunboostCommonConfig`` unchanged."""
    return "\n".join(
        ["from funboost.funboost_config_deafult import BrokerConnConfig as _B, FunboostCommonConfig as _C",
         "class BrokerConnConfig(_B):", *(f"    {k} = {v!r}" for k, v in settings.items()),
         "class FunboostCommonConfig(_C):", "    pass", ""])


def run_original(source: str, *args: Any, python: str, timeout: float = 1800) -> Optional[dict]:
    """Run a script (``source``) under the original funboost in a scratch directory.

    The original writes ``funboost_config.py`` and ``nb_log_config.py`` into what it takes for the project
    root (the cwd / first ``sys.path`` entry) and inspects the source of decorated functions, so the
    script is written into the scratch dir, which is also its cwd and first PYTHONPATH entry (bench/ follows,
    so the script can import ``_common``)."""
    with tempfile.TemporaryDirectory(prefix="funboost-orig-bench-") as d:
        script = os.path.join(d, "orig_part.py")
        with open(script, "w") as fh:
            fh.write(source)
        # bench/ after the scratch dir on the path: the script may use this module's stdlib-only helpers
        env = scratch_env(d, PYTHONPATH=os.pathsep.join([d, BENCH_DIR]))
        return _run_for_result([python, script, *map(str, args)], d, env, timeout, f"original part {args}")


# ---------------------------------------------------------------- figures
class Samples:
    """Repeated measurements of one figure: mean ± half the range (the spread we actually saw)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.rss: list[float] = []

    def add(self, value: Optional[float], rss: Optional[float] = None) -> None:
        if value is not None:
            self.values.append(float(value))
        if rss is not None:
            self.rss.append(float(rss))

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        return (max(self.values) - min(self.values)) / 2 if len(self.values) > 1 else 0.0

    def fmt(self, unit: str = "msg/s", digits: int = 0) -> str:
        if not self.values:
            return "(not run)"
        pct = 100 * self.spread / self.mean if self.mean else 0.0
        s = f"{self.mean:>12,.{digits}f} ±{pct:3.0f}% {unit}"
        if self.rss:
            s += f"   peak RSS {max(self.rss):6.1f} MB"
        return s


def best_us_per_call(fn, count: int, per_call: int = 1, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``fn`` called ``count`` times, in µs per message (``per_call``
    messages per call)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / (count * per_call) * 1e6


def noop_booster(kind: str, queue: str, broker_config: dict, concurrency: int,
                 counter: Optional["RunCounter"] = None, **params: Any) -> Any:
    """A funboost booster of a no-op task ``task(x) -> x`` on ``kind``, as the benches' funboost sides build
    it (memory state backend, no console log, no retries; ``params`` are further BoosterParams). With a
    ``counter`` each run counts itself there, the same work as the plain sides' task bodies."""
    from funboost import BoosterParams, boost

    def noop(x: int) -> int:
        if counter is not None:
            counter.hit()
        return x
    options: dict[str, Any] = {"state_backend": "memory", "log_to_console": False, "max_retry_times": 0, **params}
    return boost(BoosterParams(queue_name=queue, broker_kind=kind, broker_exclusive_config=broker_config,
                               concurrent_num=concurrency, **options))(noop)


def alternate_push(plain: Any, ours: Any, per_round: int, rounds: int) -> dict[str, float]:
    """One-by-one push rates of two push callables (``push(i)``) in the same process, alternating: after one
    warm-up push each (``push(-1)``), each round pushes ``per_round`` messages with each side, the order
    flipped every round.

    Measured so because a framework push is a loopback round trip whose cost drifts by tens of percent
    within seconds on a shared host: two parts in separate processes, one after the other, compare two
    different moments. Returns the median rate and CPU µs per push of each side (``plain``, ``funboost``)
    and the median of the per-round ratios funboost / plain."""
    plain(-1)  # warm-up: connections made, queues declared, first-call caches filled
    ours(-1)
    rates: dict[str, list[float]] = {"plain": [], "funboost": []}
    cpus: dict[str, list[float]] = {"plain": [], "funboost": []}
    sides = [("plain", plain), ("funboost", ours)]
    for r in range(rounds):
        for name, push in (sides if r % 2 == 0 else sides[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(per_round):
                push(i)
            rates[name].append(per_round / (time.perf_counter() - t0))
            cpus[name].append((time.process_time() - c0) / per_round * 1e6)
    return {"plain": statistics.median(rates["plain"]), "funboost": statistics.median(rates["funboost"]),
            "plain_cpu_us": statistics.median(cpus["plain"]), "funboost_cpu_us": statistics.median(cpus["funboost"]),
            "ratio": statistics.median(o / p for o, p in zip(rates["funboost"], rates["plain"]))}


# ---------------------------------------------------------------- counting runs, timing loops
class RunCounter:
    """Counts the runs of a no-op task body under one lock (the same work on every side of a comparison):
    when the first run started, when the ``target``-th ended, and an event set then. The consume rates of
    the benches are taken from these two times, so worker start-up is not in them."""

    def __init__(self, target: int = 0) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.target = target
        self.first = 0.0  # perf_counter at the first run's start
        self.last = 0.0  # perf_counter at the target-th run's end
        self.done = threading.Event()

    def reset(self, target: int) -> None:
        with self.lock:
            self.n, self.target, self.first, self.last = 0, target, 0.0, 0.0
            self.done.clear()

    def hit(self) -> None:
        with self.lock:
            if self.n == 0:
                self.first = time.perf_counter()
            self.n += 1
            if self.n >= self.target:
                self.last = time.perf_counter()
                self.done.set()

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def wait_all(self, timeout: float, what: str = "tasks") -> None:
        """Wait for the target; a part whose runs did not all happen must fail, not report a rate."""
        if not self.done.wait(timeout):
            raise RuntimeError(f"only {self.n} of {self.target} {what} ran within {timeout:g} s")

    def steady_rate(self) -> float:
        """Runs per second from the first run's start to the last run's end (``target - 1`` intervals)."""
        return (self.target - 1) / (self.last - self.first)


def timed_loop(call: Callable[[int], Any], count: int) -> tuple[float, float]:
    """``call(0) .. call(count - 1)`` one by one: (calls per second, this process's CPU seconds per call).
    CPU is user + system of all threads (``process_time``), so work a client does in the background counts."""
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(count):
        call(i)
    return count / (time.perf_counter() - t0), (time.process_time() - c0) / count


def timed_drain(start: Callable[[], Any], counter: RunCounter, timeout: float = 600) -> tuple[float, float]:
    """``start()`` the workers on ``counter.target`` waiting messages and wait for the last run: (steady-state
    rate, see :meth:`RunCounter.steady_rate`; this process's CPU seconds per message from ``start()`` on)."""
    c0 = time.process_time()
    start()
    counter.wait_all(timeout)
    return counter.steady_rate(), (time.process_time() - c0) / counter.target


def publish_then_drain(publish: Callable[[int], Any], start: Callable[[], Any], counter: RunCounter, n: int,
                       timeout: float = 600) -> dict[str, float]:
    """One side of a framework bench (Celery, dramatiq, huey, rq), so both sides are timed alike: a warm-up
    ``publish(-1)`` (connection made, queue declared), ``n - 1`` publishes one by one, then the workers
    started on the ``n`` waiting messages. Rates in msg/s, CPU in µs per message of this process."""
    counter.reset(n)
    publish(-1)
    pub, pub_cpu = timed_loop(publish, n - 1)
    cons, cons_cpu = timed_drain(start, counter, timeout)
    return {"publish": pub, "consume": cons, "publish_cpu_us": pub_cpu * 1e6, "consume_cpu_us": cons_cpu * 1e6}


def push_then_consume(push: Callable[[Any], Any], consume: Callable[[], Any], counter: RunCounter, timeout: float,
                      one_by_one: bool = True) -> tuple[float, float]:
    """The end-to-end benches' two figures for ``counter.target`` no-op tasks, in msg/s: the push (``push(i)``
    for each, or ``push(range(n))`` once: a ``push_many``), then ``consume()`` timed from the call to the last
    run, the consumer's start-up included (as a user waiting for a backlog sees it)."""
    n = counter.target
    t = time.perf_counter()
    if one_by_one:
        for i in range(n):
            push(i)
    else:
        push(range(n))
    pub = n / (time.perf_counter() - t)
    t = time.perf_counter()
    consume()
    counter.wait_all(timeout)
    return pub, n / (time.perf_counter() - t)


def broker_rates(broker: Any, body: str, one_n: int, batch_n: int, fetch_n: int) -> tuple[float, float, float]:
    """A broker plugin driven directly (no engine), the broker-level figures of the database benches, msg/s:
    ``one_n`` publishes of one message, ``batch_n`` messages in publishes of 1000, then ``fetch(fetch_n)`` +
    ``ack`` on one thread until all of them came back."""
    from funboost.plugins.broker import OutgoingMessage
    m = [OutgoingMessage(body=body, task_id="x")]
    t = time.perf_counter()
    for _ in range(one_n):
        broker.publish(m)
    one = one_n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(0, batch_n, 1000):
        broker.publish([OutgoingMessage(body=body, task_id="x") for _ in range(1000)])
    batch = batch_n / (time.perf_counter() - t)
    total = one_n + batch_n
    t = time.perf_counter()
    got = 0
    while got < total:
        d = broker.fetch(fetch_n, 1.0)
        broker.ack(d)
        got += len(d)
    return one, batch, total / (time.perf_counter() - t)


def push_until_run(push: Callable[[int], Any], counter: RunCounter, timeout: float) -> float:
    """End to end with the consumer already running: ``push(i)`` one by one for ``counter.target`` tasks,
    timed until the last of them ran (msg/s)."""
    t = time.perf_counter()
    for i in range(counter.target):
        push(i)
    counter.wait_all(timeout)
    return counter.target / (time.perf_counter() - t)


def funboost_side(kind: str, queue: str, broker_config: dict, n: int, concurrency: int) -> tuple[dict[str, float], Any]:
    """funboost's side of a framework bench (Celery, dramatiq, huey): a no-op booster on ``kind`` timed by
    :func:`publish_then_drain` as the plain side is; returns its figures and the stopped booster (the caller
    deletes the queue its own way)."""
    os.environ["FUNBOOST_NO_KEEPALIVE"] = "1"  # the part's process ends when its function returns, not at idle
    counter = RunCounter()
    noop = noop_booster(kind, queue, broker_config, concurrency, counter)
    figures = publish_then_drain(noop.push, noop.consume, counter, n)
    noop.stop_consume(10)
    return figures, noop


# ---------------------------------------------------------------- the framework benches' drivers
def framework_arguments(default_n: int, brokers: Optional[str] = None) -> argparse.Namespace:
    """The framework benches' command line (Celery, dramatiq, huey, rq, nameko): ``--n``, ``--concurrency``,
    ``--rounds``; with ``brokers`` also ``--brokers`` (that default) and a part's hidden ``--url``. The hidden
    ``--part NAME`` runs one side in this process, as :func:`best_of_rounds` starts it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=default_n)
    ap.add_argument("--concurrency", type=int, default=8)
    if brokers is not None:
        ap.add_argument("--brokers", default=brokers)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    if brokers is not None:
        ap.add_argument("--url", help=argparse.SUPPRESS)
    return ap.parse_args()


def run_json_part(cmd: Sequence[str]) -> dict[str, float]:
    """Run a framework bench's part (``cmd``) in a fresh process: its figures are the JSON on its last stdout
    line. A failed part ends the bench (status 1) with its stderr, as a comparison missing a side is void."""
    out = subprocess.run(list(cmd), capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:])
        raise SystemExit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of_rounds(rounds: int, parts: Sequence[str], command: Callable[[str], Sequence[str]]) -> dict[str, dict]:
    """Each part (``command(part)``) run ``rounds`` times in turn; per part the best of every figure: the
    highest rate, the lowest CPU (``*_cpu_us``), the figures least disturbed by other load on the host."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for part in parts:
            b = best.setdefault(part, {})
            for k, v in run_json_part(command(part)).items():
                pick_best = min if k.endswith("_cpu_us") else max
                b[k] = pick_best(b[k], v) if k in b else v
    return best


def figure_row(label: str, label_width: int, values: Iterable[float], widths: Sequence[int], digits: int) -> str:
    """``label`` and ``values`` in fixed-width columns (the framework benches' tables)."""
    return f"{label:{label_width}} " + " ".join(f"{v:{w}.{digits}f}" for v, w in zip(values, widths))


def print_best(best: Mapping[str, Mapping[str, float]], sides: Sequence[tuple[str, str]], keys: Sequence[str],
               label_width: int, widths: Sequence[int], prefix: str = "",
               ratios: Sequence[tuple[str, str]] = (("plain", "funboost / plain"),)) -> None:
    """One row of figures (``keys``) per side (``(part, label)``), then per ``(anchor part, label)`` in
    ``ratios`` the row of funboost / anchor figure by figure."""
    for part, label in sides:
        print(prefix + figure_row(label, label_width, (best[part][k] for k in keys), widths, 0))
    ours = best["funboost"]
    for part, label in ratios:
        print(prefix + figure_row(label, label_width, (ours[k] / best[part][k] for k in keys), widths, 2))


def compare_raw_and_funboost(script: str, rows: Iterable[tuple[str, str, str, int]], repeat: int, raw_label: str,
                             shortfall: tuple[str, str], target: float = 0.6) -> None:
    """The transport benches' table (mqtt, nats): per row ``(title, raw part, funboost part, n)`` both parts
    ``repeat`` times, interleaved so drift in the machine's load hits both alike, each in a fresh process
    (``run_part``) returning ``{"rate": ...}``; then the two rates and their ratio against ``target``. A part
    whose rate is None did not see all its messages: ``shortfall`` = (its count key, what the count means)."""
    count_key, count_text = shortfall
    for title, raw_part, fb_part, n in rows:
        raw, fb = Samples(), Samples()
        for _ in range(repeat):
            for part, s in ((raw_part, raw), (fb_part, fb)):
                r = run_part(script, part, n)
                if r and r.get("rate") is None:
                    print(f"  {part}: only {r.get(count_key)} of {n} {count_text}")
                elif r:
                    s.add(r["rate"], r.get("rss_mb"))
        q = ratio(fb, raw)
        print(f"{title}\n  {raw_label:<13}{raw.fmt()}\n  funboost     {fb.fmt()}\n"
              f"  ratio {q if q is None else round(q, 2)} (target >= {target:g}: {verdict(q, target)})", flush=True)


def part_functions(namespace: Mapping[str, Any]) -> dict[str, Callable[..., dict]]:
    """A bench module's ``part_*`` functions by name without the prefix (what ``--part NAME`` runs)."""
    return {name[5:]: fn for name, fn in namespace.items() if name.startswith("part_")}


def ratio(a: Samples, b: Samples) -> Optional[float]:
    if not (a.ok and b.ok) or not b.mean:
        return None
    return a.mean / b.mean


def verdict(value: Optional[float], target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "MET" if met else "NOT MET"


def machine_info() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return (f"{os.cpu_count()} cpu ({model or platform.machine()}), python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, {load}")


def print_table(rows: Iterable[Sequence[str]], widths: Sequence[int]) -> None:
    for r in rows:
        print("  " + "".join(f"{c:<{w}}" for c, w in zip(r, widths)), flush=True)
