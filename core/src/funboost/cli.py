"""The ``funboost`` command (also ``python -m funboost``).

Global options go before the command; ``-m`` names the modules that define the boosters::

    funboost brokers [--json]                        installed broker kinds, distributions, capabilities
    funboost state-backends                          installed state backends
    funboost -m proj.tasks queues                    queues of the imported modules (alias show_all_queues)
    funboost -m proj.tasks publish Q '{"x": 1}' [--countdown S | --eta T] [--task-id ID] [--priority N] ...
    funboost -m proj.tasks push Q 1 2 --y=3          the function's own positional / keyword arguments
    funboost -m proj.tasks consume [Q ...] [--processes N]    (consume_all: every imported queue)
    funboost -m proj.tasks mp_consume Q -p 3 | mp_consume --q1=2 --q2=3 | mp_consume_all 2
    funboost -m proj.tasks clear Q [Q ...]           drop the waiting messages
    funboost -m proj.tasks count Q                   messages waiting
    funboost -m proj.tasks status Q [--json]         sizes, flags, consumers and recent results
    funboost pause|resume Q [Q ...]                  (resume alias continue_consume)
    funboost set-qps Q 5 | set-qps Q none            (set_qps)
    funboost set-concurrency Q 20                    (set_concurrency)
    funboost result TASK_ID [--queue Q] [--wait S]   a task's RPC result or status record
    funboost jobs [Q ...] [--store sqlite|redis|sqlalchemy] [--json]   APScheduler jobs of the job stores
    funboost web [ARGS ...]                          the web manager (funboost-web; ARGS are its own)
    funboost new-broker NAME [--dest DIR]            scaffold a broker plugin distribution

pause / resume / set-qps / set-concurrency only write the queue's flags into the state backend (every
consumer reads them each second), so they need no user code: without ``-m`` they use ``--state-backend`` /
``--state-url`` (default: ``FUNBOOST_STATE_BACKEND``, else sqlite). publish / push / clear / count / status
talk to the broker: through the queue's booster when ``-m`` defines it, else through the queue catalog that
consumers write into the state backend (funboost.admin). consume always needs ``-m``.

The original funboost's spellings are accepted too: ``--import_modules_str``, ``--booster_dirs_str``,
``--max_depth``, ``--py_file_re_str``, ``--project_root_path``, ``show_all_queues``, ``continue_consume``,
``consume_all``, ``mp_consume_all``, ``m_consume`` / ``multi_process_consume``.

Options are never abbreviated (argparse's prefix matching is off), so after ``push Q`` every ``--name=value``
is the function's keyword, even ``--b`` or ``--state``. Global options apply to every command: before
``web``, ``--state-backend`` / ``--state-url`` are handed to funboost web, and the import options are an error.

Every error is one line on stderr (``funboost: error: ...``) and exit status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Sequence, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from funboost.booster import Booster
    from funboost.state.base import StateBackend

USAGE_ERROR = 2  # the exit status of every error, as argparse uses for its own

# commands whose arguments are not argparse's: everything after the command is handed over as is
WEB_COMMANDS = ("web",)
MP_CONSUME_COMMANDS = ("mp_consume", "mp-consume", "m_consume", "multi_process_consume")


class CliError(Exception):
    """A usage error found after parsing (bad JSON, unknown queue ...): one line, exit status 2."""


# ---------------------------------------------------------------- helpers
def _booster(q: str) -> "Booster":
    from funboost.registry import BoostersManager
    try:
        return BoostersManager.get_booster(q)
    except KeyError:
        known = BoostersManager.get_all_queues()
        if known:
            raise CliError(f"no booster for queue {q!r} in the imported modules; known queues: {known}") from None
        raise CliError(f"no booster for queue {q!r}: this command talks to the queue's broker, so it needs the "
                       f"module that defines the booster: funboost -m MODULE ...") from None


def _admin(args: argparse.Namespace) -> Any:
    """funboost.admin.QueueAdmin on the state backend of ``--state-backend`` / ``--state-url``: the queue
    catalog that consumers write, for queues whose code is not imported (no ``-m``)."""
    admin = getattr(args, "_queue_admin", None)
    if admin is None:
        from funboost.admin import QueueAdmin
        from funboost.state.base import get_state_backend
        admin = args._queue_admin = QueueAdmin(get_state_backend(args.state_backend, args.state_url))
    return admin


def _no_queue(q: str) -> CliError:
    from funboost.registry import BoostersManager
    known = BoostersManager.get_all_queues()
    where = f"the imported modules define {known}" if known else "no module was imported (-m)"
    return CliError(f"queue {q!r} is unknown here: {where}, and the state backend's queue catalog has no record "
                    f"of it (a consumer of the queue writes one when it runs); pass -m MODULE, the module that "
                    f"defines its booster")


def _catalog_broker(args: argparse.Namespace, q: str) -> Any:
    """The broker of a queue that ``-m`` did not define, built from its catalog record."""
    from funboost.admin import BrokerUnknown
    admin = _admin(args)
    if admin.record(q) is None:
        raise _no_queue(q)
    try:
        return admin.broker(q)
    except BrokerUnknown as exc:
        raise CliError(f"{exc}; pass -m MODULE to use the queue's booster") from None


def _known_booster(q: str) -> "Optional[Booster]":
    from funboost.registry import BoostersManager
    try:
        return BoostersManager.get_booster(q)
    except KeyError:
        return None


def _state_for(args: argparse.Namespace, q: Optional[str] = None) -> "StateBackend":
    """The state backend of queue ``q``: its booster's when ``-m`` defined it, else the one named by
    ``--state-backend`` / ``--state-url`` (default: FUNBOOST_STATE_BACKEND, else sqlite)."""
    from funboost.state.base import get_state_backend
    b = _known_booster(q) if q else None
    if b is not None and not args.state_backend and not args.state_url:
        return b.state_backend()
    return get_state_backend(args.state_backend, args.state_url)


def _status_table(args: argparse.Namespace, q: str) -> str:
    b = _known_booster(q)
    if b is not None:
        return b.params.function_result_status_persistence_conf.table_name or q
    return _admin(args).status_table(q)


def parse_value(text: str) -> Any:
    """A command-line value as the function receives it: JSON (``1``, ``2.5``, ``true``, ``"s"``,
    ``[1, 2]``), else a Python literal (``True``, ``None``, ``{'x': 1}``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_call_arguments(tokens: Sequence[str]) -> tuple[list, dict]:
    """``1 2 --y=3 --z 4`` as (positional, keyword) arguments. ``--flag`` alone (last, or followed by
    another ``--name``) is True; after ``--`` everything is positional; ``-`` in names becomes ``_``."""
    args: list = []
    kwargs: dict = {}
    i, only_positional = 0, False
    while i < len(tokens):
        tok = tokens[i]
        if only_positional or not tok.startswith("--"):
            args.append(parse_value(tok))
        elif tok == "--":
            only_positional = True
        else:
            name, eq, value = tok[2:].partition("=")
            name = name.replace("-", "_")
            if not name.isidentifier():
                raise CliError(f"bad keyword argument {tok!r}: expected --name=value")
            if not eq:
                if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    i += 1
                    value = tokens[i]
                else:
                    value = "true"
            if name in kwargs:
                raise CliError(f"keyword argument {name!r} given twice")
            kwargs[name] = parse_value(value)
        i += 1
    return args, kwargs


def _json_object(text: str, what: str) -> dict:
    """A JSON object (or the original's Python-literal dict, ``"{'x': 1}"``)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise CliError(f"{what} must be a JSON object of the function's arguments: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object of the function's arguments, got {type(value).__name__}")
    return value


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def _fmt_time(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."


# ---------------------------------------------------------------- listing
def _cmd_brokers(args: argparse.Namespace) -> int:
    from funboost.plugins.manager import get_broker_registry
    infos = get_broker_registry().installed()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    for i in infos:
        print(f"{i.kind:<16} {i.distribution} {i.version}")
        print(f"    names: {', '.join(i.aliases)}")
        if i.error:
            print(f"    BROKEN: {i.error}")
            continue
        assert i.broker_cls is not None  # set for every kind without an error
        caps = i.broker_cls.capabilities.as_dict()
        on = [k for k, v in caps.items() if v is True]
        print(f"    capabilities: {', '.join(on) or '-'}; queue size {caps['queue_size']}; "
              f"ordering {caps['ordering']}")
        if caps.get("notes"):
            print(f"    notes: {caps['notes']}")
    return 0


def _cmd_state_backends(args: argparse.Namespace) -> int:
    from funboost.state.base import installed_state_backends
    for n in installed_state_backends():
        print(n)
    return 0


def _cmd_queues(args: argparse.Namespace) -> int:
    from funboost.registry import BoostersManager
    for b in BoostersManager.all_boosters():
        print(f"{b.queue_name}\t{b.params.broker_kind}\t{b.func_name}")
    return 0


# ---------------------------------------------------------------- publishing
def _cmd_push(args: argparse.Namespace) -> int:
    b = _known_booster(args.queue)
    tokens = list(args.arguments)
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        # the CLI's first form, ``push Q '{"x": 1}'``: a JSON object of keyword arguments (same as publish).
        # A function whose only argument is a dict gets it with  push Q --name='{...}'
        kwargs = _json_object(tokens[0], "the message")
        print(b.publish(kwargs).task_id if b is not None else _catalog_publish(args, args.queue, kwargs, None))
        return 0
    pos, kw = parse_call_arguments(tokens)
    if b is not None:
        print(b.push(*pos, **kw).task_id)
        return 0
    _catalog_broker(args, args.queue)  # known to the catalog?
    names = (_admin(args).record(args.queue) or {}).get("arg_names") or []
    if len(pos) > len(names):
        raise CliError(f"{args.queue!r} takes {names}: too many positional arguments for the catalog's argument "
                       f"names (use --name=value, or -m MODULE)")
    for name, value in zip(names, pos):
        if name in kw:
            raise CliError(f"argument {name!r} given twice")
        kw[name] = value
    print(_catalog_publish(args, args.queue, kw, None))
    return 0


def _catalog_publish(args: argparse.Namespace, q: str, kwargs: dict, options: Optional[Any]) -> str:
    """Publish through the queue catalog (no booster here): arguments checked against the recorded names."""
    _catalog_broker(args, q)
    extra = options.to_extra() if options is not None else {}
    task_id = extra.pop("task_id", None)
    return _admin(args).publish(q, kwargs, task_id=task_id, options=extra or None)


_OPTION_FLAGS = (  # publish flags that become TaskOptions fields: (flag, field, type)
    ("--task-id", "task_id", str),
    ("--countdown", "countdown", float),
    ("--eta", "eta", str),
    ("--priority", "priority", int),
    ("--max-retry-times", "max_retry_times", int),
    ("--function-timeout", "function_timeout", float),
    ("--msg-expire-seconds", "msg_expire_seconds", float),
    ("--misfire-grace-time", "misfire_grace_time", float),
    ("--key", "key", str),
)


def _task_options(args: argparse.Namespace) -> Optional[Any]:
    from pydantic import ValidationError

    from funboost.eta import eta_to_timestamp
    from funboost.params import TaskOptions
    opts: dict[str, Any] = _json_object(args.options, "--options") if args.options else {}
    for _, field, _ in _OPTION_FLAGS:
        value = getattr(args, field)
        if value is not None:
            opts[field] = value
    if isinstance(opts.get("eta"), str):
        text = opts["eta"]
        try:  # epoch seconds, or an ISO-8601 / "YYYY-mm-dd HH:MM:SS" local time
            opts["eta"] = float(text)
        except ValueError:
            try:
                eta_to_timestamp(text)
            except ValueError as exc:
                raise CliError(f"--eta: {exc}; give epoch seconds or an ISO-8601 time") from None
    if args.rpc or args.wait is not None:
        opts["is_using_rpc_mode"] = True
    if not opts:
        return None
    try:
        return TaskOptions(**opts)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise CliError(f"bad task option {where}: {first.get('msg')}") from None


def _cmd_publish(args: argparse.Namespace) -> int:
    b = _known_booster(args.queue)
    msg = _json_object(args.message, "the message")
    options = _task_options(args)
    if b is not None:
        r = b.publish(msg, task_options=options)
        task_id = r.task_id
    else:
        task_id = _catalog_publish(args, args.queue, msg, options)
    print(task_id, flush=True)
    if args.wait is not None:
        state = b.state_backend() if b is not None else _admin(args).state
        data = state.wait_result(task_id, args.wait)
        if data is None:
            raise CliError(f"no result for task {task_id} within {args.wait}s")
        _print_json(data)
        if not data.get("success", True):
            return 1
    return 0


# ---------------------------------------------------------------- queue management (broker)
def _queue_broker(args: argparse.Namespace, q: str) -> Any:
    """The queue's broker: its booster's (-m), else the one the catalog describes."""
    b = _known_booster(q)
    return b.broker if b is not None else _catalog_broker(args, q)


def _cmd_clear(args: argparse.Namespace) -> int:
    brokers = [_queue_broker(args, q) for q in args.queues]  # every name checked before anything is dropped
    for br in brokers:
        print(br.purge())
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    size = _queue_broker(args, args.queue).queue_size()
    print(-1 if size.ready is None else size.ready + (size.delayed or 0))
    return 0


def queue_status(args: argparse.Namespace, q: str, results: int = 10) -> dict:
    """What ``status`` shows: the broker's sizes (needs the booster), the queue's flags, live consumers
    (from their heartbeats) and the newest status records."""
    b = _known_booster(q)
    if b is not None:
        size, kind, saved = b.queue_size().as_dict(), b.params.broker_kind, \
            b.params.function_result_status_persistence_conf.is_save_status
    else:
        broker = _catalog_broker(args, q)
        size, kind = broker.queue_size().as_dict(), broker.kind
        saved = bool((_admin(args).record(q) or {}).get("status_table"))
    state = _state_for(args, q)
    flags = {str(k): v for k, v in state.get_flags(q).items()}
    consumers = state.live_consumers(q)
    recent = state.query_statuses(_status_table(args, q), limit=results) if results > 0 else []
    return {"queue": q, "broker_kind": kind, "size": size, "flags": flags, "consumers": consumers,
            "status_records_kept": saved, "recent_results": recent}


def _cmd_status(args: argparse.Namespace) -> int:
    out = [queue_status(args, q, args.results) for q in args.queues]
    if args.json:
        _print_json(out if len(out) > 1 else out[0])
        return 0
    for st in out:
        size = st["size"]
        print(f"queue {st['queue']} ({st['broker_kind']})")
        print("  size: " + ", ".join(f"{k.replace('_', '-')} {'unknown' if v is None else v}" for k, v in size.items()))
        flags = st["flags"]
        print(f"  paused: {'yes' if flags.get('pause') else 'no'}; qps flag: {flags.get('qps', '-')}; "
              f"concurrency flag: {flags.get('concurrent_num', '-')}")
        print(f"  consumers: {len(st['consumers'])}")
        for c in st["consumers"]:
            print(f"    {c.get('host')} pid {c.get('pid')}: {c.get('rate', 0)}/s, {c.get('total_runs', 0)} runs, "
                  f"{c.get('total_fail', 0)} failed, concurrency {c.get('concurrent_num')}"
                  f"{', paused' if c.get('paused') else ''}; started {_fmt_time(c.get('started'))}")
        print(f"  recent results: {len(st['recent_results'])}"
              + ("" if st["status_records_kept"] else " (status records are kept with "
                 "function_result_status_persistence_conf=FunctionResultStatusPersistenceConfig(is_save_status=True))"))
        for r in st["recent_results"]:
            outcome = ("ok " + _short(r.get("result"), 40)) if r.get("success") else \
                f"FAILED {r.get('exception_type') or ''}: {_short(r.get('exception_msg') or '', 40)}"
            print(f"    {_fmt_time(r.get('time_start'))} {r.get('task_id')} {_short(r.get('params'), 40)} "
                  f"-> {outcome}")
    return 0


# ---------------------------------------------------------------- flags (state backend only)
def _report_flag(args: argparse.Namespace, q: str, what: str, flag: str) -> None:
    """One line: what was set, and on how many live consumers it shows (their heartbeats). With ``--wait S``
    wait up to S seconds until every live consumer shows it."""
    from funboost.admin import QueueAdmin
    admin = QueueAdmin(_state_for(args, q))
    applied = admin.applied(q, flag)
    deadline = time.monotonic() + (args.wait or 0)
    while args.wait and applied.of and applied.on < applied.of and time.monotonic() < deadline:
        time.sleep(0.2)
        applied = admin.applied(q, flag)
    print(f"{q}: {what} (applied on {applied.on} of {applied.of} live consumer{'s' if applied.of != 1 else ''})")
    if applied.of == 0 and _known_booster(q) is None:
        sys.stderr.write(f"funboost: note: no live consumer of {q!r} right now; the flag applies when one "
                         f"starts\n")
    elif args.wait and applied.on < applied.of:
        raise CliError(f"{q}: {what}, but only {applied.on} of {applied.of} live consumers show it after "
                       f"{args.wait}s")


def _cmd_pause_resume(args: argparse.Namespace) -> int:
    from funboost.flags import QueueFlag
    pause = args.action == "pause"
    for q in args.queues:
        _state_for(args, q).set_flag(q, QueueFlag.PAUSE.value, pause)
        _report_flag(args, q, "paused" if pause else "resumed", QueueFlag.PAUSE.value)
    return 0


def _cmd_set_qps(args: argparse.Namespace) -> int:
    from funboost.flags import QueueFlag
    text = args.qps.strip().lower()
    if text in ("none", "off", "unlimited", "0"):
        qps: Optional[float] = None
    else:
        try:
            qps = float(text)
        except ValueError:
            raise CliError(f"qps must be a number or 'none', got {args.qps!r}") from None
        if not (qps > 0 and math.isfinite(qps)):  # (an infinite rate is no rate: 'none' says "no limit")
            raise CliError(f"qps must be a finite number > 0 (or 'none' for no limit), got {args.qps!r}")
    _state_for(args, args.queue).set_flag(args.queue, QueueFlag.QPS.value, qps)
    _report_flag(args, args.queue, f"qps set to {qps if qps is not None else 'no limit'}", QueueFlag.QPS.value)
    return 0


def _cmd_set_concurrency(args: argparse.Namespace) -> int:
    from funboost.flags import QueueFlag
    if args.n < 1:
        raise CliError(f"concurrency must be >= 1, got {args.n}")
    _state_for(args, args.queue).set_flag(args.queue, QueueFlag.CONCURRENT_NUM.value, args.n)
    _report_flag(args, args.queue, f"concurrency set to {args.n}", QueueFlag.CONCURRENT_NUM.value)
    return 0


# ---------------------------------------------------------------- results and jobs
def _cmd_result(args: argparse.Namespace) -> int:
    state = _state_for(args, args.queue)
    data = state.wait_result(args.task_id, args.wait) if args.wait else state.get_result(args.task_id)
    if data is None and args.queue:
        found = state.query_statuses(_status_table(args, args.queue), task_id=args.task_id, limit=1)
        data = found[0] if found else None
    if data is None:
        where = f" or in the status records of {args.queue!r}" if args.queue else \
            " (a task published without RPC mode has none; --queue Q also searches its status records)"
        raise CliError(f"no result for task {args.task_id} in the state backend{where}")
    _print_json(data)
    return 0 if data.get("success", True) else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    from funboost.registry import BoostersManager
    from funboost.timing_job import list_stored_jobs
    queues = list(args.queues) or (BoostersManager.get_all_queues() if args.import_modules or args.booster_dirs
                                   else None)
    try:
        jobs = list_stored_jobs(args.store, queues)
    except (ImportError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _print_json(jobs)
        return 0
    if not jobs:
        print(f"no jobs in the {args.store} job store" + (f" for {queues}" if queues else ""))
    for j in jobs:
        nxt = j["next_run_time"] or "paused"
        print(f"{j['queue']}\t{j['id']}\t{j['trigger']}\tnext {nxt}\targs {_short(j['args'], 40)} "
              f"kwargs {_short(j['kwargs'], 40)}")
    return 0


# ---------------------------------------------------------------- consuming
class ConsumeMonitor:
    """The line ``consume`` shows: rate (runs/s over the last 10 s), done, failed, remaining. On a
    terminal it is one line redrawn in place (console log records clear it first, so they are never
    written into it); otherwise a plain line every ``interval`` seconds when something changed."""

    def __init__(self, sample: Callable[[], tuple[int, int, Optional[int]]], out: TextIO, tty: bool,
                 interval: float) -> None:
        self.sample = sample
        self.out = out
        self.tty = tty
        self.interval = interval
        self._lock = threading.Lock()
        self._drawn = False
        self._stop = threading.Event()
        self._history: deque[tuple[float, int]] = deque()
        self._last_plain: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._wrapped: list[tuple[logging.Handler, Callable[[logging.LogRecord], None], bool]] = []

    def line(self) -> str:
        try:
            done, failed, remaining = self.sample()
        except Exception as exc:  # a broker or state backend hiccup: say so in the line, keep going
            return f"status unavailable: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > 10:
            self._history.popleft()
        t0, d0 = self._history[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        rem = "unknown" if remaining is None else str(remaining)
        return f"{rate:.1f}/s, done {done}, failed {failed}, remaining {rem}"

    def _clear_line(self) -> None:
        with self._lock:
            if self._drawn:
                self.out.write("\r\033[K")
                self.out.flush()
                self._drawn = False

    def _wrap_emit(self, handler: logging.Handler) -> None:
        """Clear the line inside the handler's emit, which runs under the handler's lock: a filter runs
        before that lock, so a redraw could slip in between the clearing and the record (which then
        continued the status line)."""
        original = handler.emit
        had_own = "emit" in vars(handler)

        def emit(record: logging.LogRecord) -> None:
            self._clear_line()
            original(record)

        handler.emit = emit  # type: ignore[method-assign]
        self._wrapped.append((handler, original, had_own))

    def tick(self) -> None:
        text = self.line()
        # the console handlers' locks first (the order emit takes them in): no record is half-way out while
        # the line is drawn
        handlers = [h for h, _, _ in self._wrapped]
        for h in handlers:
            h.acquire()
        try:
            with self._lock:
                if self.tty:
                    self.out.write(f"\r\033[K{text}")
                    self._drawn = True
                else:
                    key = text.split(", ", 1)[1] if ", " in text else text  # done/failed/remaining, not the rate
                    if key == self._last_plain:
                        return
                    self._last_plain = key
                    self.out.write(f"{_dt.datetime.now():%Y-%m-%d %H:%M:%S} consume: {text}\n")
                self.out.flush()
        finally:
            for h in reversed(handlers):
                h.release()

    def _run(self) -> None:
        period = 1.0 if self.tty else self.interval
        while not self._stop.wait(period):
            self.tick()

    def start(self) -> None:
        if self.tty:
            for h in _console_handlers():
                self._wrap_emit(h)
        self.tick()
        self._thread = threading.Thread(target=self._run, name="funboost-cli-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for h, original, had_own in reversed(self._wrapped):  # a handler wrapped twice unwinds in order
            if had_own:
                h.emit = original  # type: ignore[method-assign,assignment]
            else:
                del h.emit  # the class's emit again
        self._wrapped.clear()
        text = self.line()
        with self._lock:
            self.out.write(("\r\033[K" if self.tty else "") + f"consume finished: {text}\n")
            self.out.flush()


def _console_handlers() -> list[logging.Handler]:
    """Handlers that write to a terminal: funboost's console handler, the root logger's, logging's last resort."""
    out: list[logging.Handler] = []
    last_resort = [logging.lastResort] if logging.lastResort is not None else []  # used while none is configured
    for handlers in (logging.getLogger("funboost").handlers, logging.getLogger().handlers, last_resort):
        for h in handlers:
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and stream is not None and getattr(stream, "isatty", lambda: False)():
                out.append(h)
    return out


def _remaining(boosters: list) -> Optional[int]:
    total = 0
    for b in boosters:
        n = b.get_message_count()
        if n < 0:
            return None
        total += n
    return total


def _run_consume(args: argparse.Namespace, queue_processes: dict[str, int], in_processes: bool = False) -> int:
    """Consume ``queue_processes`` (queue -> processes) until SIGINT / SIGTERM, showing the status line.
    In this process when every count is 1 and not ``in_processes``, else in child processes."""
    from funboost.keepalive import wait_for_shutdown
    from funboost.registry import BoostersManager
    boosters = [_booster(q) for q in queue_processes]
    if not boosters:
        raise CliError("no queue to consume: the imported modules define no booster (funboost -m MODULE consume)")
    multi = in_processes or any(n > 1 for n in queue_processes.values())
    if multi:
        procs = BoostersManager.multi_process_consume_queues(**queue_processes)
        pids = {p.pid for p in procs}

        # the children write their totals to memory shared with this process, twice a second and once more
        # after their drain (heartbeats came every 5 s and ended before the drain: the final line undercounted)
        from funboost.multiprocess import children_totals

        def sample() -> tuple[int, int, Optional[int]]:
            done, failed = children_totals(pids)
            return done, failed, _remaining(boosters)
    else:
        for b in boosters:
            b.consume()
        consumers = [b.consumer for b in boosters]  # kept: the final line counts after they stopped

        def sample() -> tuple[int, int, Optional[int]]:
            done = sum(c.stats.total_runs for c in consumers if c is not None)
            failed = sum(c.stats.total_fail for c in consumers if c is not None)
            return done, failed, _remaining(boosters)
    monitor = None
    if not args.no_status:
        monitor = ConsumeMonitor(sample, sys.stdout, sys.stdout.isatty(), args.status_interval)
        monitor.start()
    try:
        return wait_for_shutdown()
    finally:
        if monitor is not None:
            monitor.stop()


def _cmd_consume(args: argparse.Namespace) -> int:
    from funboost.registry import BoostersManager
    if args.processes < 1:
        raise CliError(f"--processes must be >= 1, got {args.processes}")
    queues = list(args.queues) or BoostersManager.get_all_queues()
    return _run_consume(args, {q: args.processes for q in queues})


def _cmd_mp_consume_all(args: argparse.Namespace) -> int:
    from funboost.registry import BoostersManager
    if args.process_num < 1:
        raise CliError(f"the process count must be >= 1, got {args.process_num}")
    return _run_consume(args, {q: args.process_num for q in BoostersManager.get_all_queues()}, in_processes=True)


def parse_mp_consume(tokens: Sequence[str]) -> tuple[dict[str, Optional[int]], int, Optional[float], bool]:
    """``mp_consume`` arguments: queues (``Q``, ``--Q=N``, ``--Q N``), ``-p/--processes N`` (for the
    queues without their own count, default 1), ``--status-interval S``, ``--no-status``. Returns
    (queue -> count or None, default count, status interval, no_status)."""
    queues: dict[str, Optional[int]] = {}
    default, interval, no_status = 1, None, False
    i = 0

    def count(text: str, what: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise CliError(f"{what} must be a whole number, got {text!r}") from None
        if n < 1:
            raise CliError(f"{what} must be >= 1, got {n}")
        return n

    while i < len(tokens):
        tok = tokens[i]
        name, eq, value = tok.lstrip("-").partition("=")
        needs_value = tok.startswith("-") and not eq
        if needs_value and name not in ("no-status", "no_status"):
            if i + 1 >= len(tokens):
                raise CliError(f"{tok} needs a value")
            i += 1
            value = tokens[i]
        if tok in ("-p", "--processes") or tok.startswith("--processes="):
            default = count(value, "--processes")
        elif name in ("status-interval", "status_interval") and tok.startswith("--"):
            try:
                interval = float(value)
            except ValueError:
                raise CliError(f"--status-interval must be a number, got {value!r}") from None
        elif name in ("no-status", "no_status") and tok.startswith("--"):
            no_status = True
        elif tok.startswith("--"):
            queues[name] = count(value, f"the process count of {name!r}")
        elif tok.startswith("-"):
            raise CliError(f"unknown option {tok!r} of mp_consume")
        else:
            queues[tok] = None
        i += 1
    return queues, default, interval, no_status


MP_CONSUME_USAGE = """usage: funboost -m MODULES mp_consume [Q ...] [-p N] [--Q=N ...] [--status-interval S] [--no-status]

Consume each queue in processes of its own (stacked on its concurrency mode) until Ctrl-C / SIGTERM:
  mp_consume q1 q2 -p 3        q1 and q2 in 3 processes each
  mp_consume --q1=2 --q2=3     the original's form: a count per queue
  mp_consume                   every imported queue, 1 process each
"""


def _cmd_mp_consume(args: argparse.Namespace, tokens: Sequence[str]) -> int:
    from funboost.registry import BoostersManager
    if "-h" in tokens or "--help" in tokens:
        print(MP_CONSUME_USAGE, end="")
        return 0
    queues, default, interval, no_status = parse_mp_consume(tokens)
    args.status_interval = interval if interval is not None else 10.0
    args.no_status = no_status
    if not queues:
        queues = dict.fromkeys(BoostersManager.get_all_queues())
    # each queue in processes of its own (the original's mp_consume), even with a count of 1
    return _run_consume(args, {q: n or default for q, n in queues.items()}, in_processes=True)


# ---------------------------------------------------------------- web and scaffold
# global options that only say which user code to import: the web manager imports none
_IMPORT_OPTIONS = (("import_modules", "-m"), ("booster_dirs", "--booster-dirs"), ("py_file_re", "--py-file-re"),
                   ("project_root", "--project-root"))


def _web_argv(args: argparse.Namespace, argv: Sequence[str]) -> list[str]:
    """funboost web's own arguments, with the global options given before ``web`` put first (an option
    repeated after ``web`` comes later, so it wins)."""
    for dest, flag in _IMPORT_OPTIONS:
        if getattr(args, dest, None):
            raise CliError(f"{flag} does not apply to web: the web manager imports no user code")
    given = [("--state-backend", args.state_backend), ("--state-url", args.state_url)]
    return [item for flag, value in given if value is not None for item in (flag, value)] + list(argv)


def _cmd_web(argv: Sequence[str]) -> int:
    if importlib.util.find_spec("funboost_web") is None:
        raise CliError("funboost web needs the web manager, a separate distribution: pip install funboost-web")
    try:
        web_cli = importlib.import_module("funboost_web.cli")
    except ImportError as exc:
        raise CliError(f"funboost-web is installed but cannot be imported ({exc}); "
                       f"reinstall it: pip install --force-reinstall funboost-web") from None
    return int(web_cli.main(list(argv)) or 0)


def _cmd_new_broker(args: argparse.Namespace) -> int:
    from funboost.scaffold import ScaffoldError, new_broker_plugin
    try:
        path = new_broker_plugin(args.name, args.dest)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    print(f"created {path}; next: pip install -e '{path}[test]' && pytest {path}")
    return 0


# ---------------------------------------------------------------- parser
class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, with its errors as one line on stderr (no usage block) and exit status 2, and no
    abbreviated options: ``push Q --b=4`` is the function's ``b``, not a prefix of ``--booster-dirs``
    (sub-commands are made with this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)")


def _fail(message: str) -> NoReturn:
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"funboost: error: {one_line}\n")
    raise SystemExit(USAGE_ERROR)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1:  # KeyError's str() adds quotes
        return str(exc.args[0])
    if isinstance(exc, CliError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _add_global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--import-modules", "--import_modules_str", dest="import_modules", default="",
                   help="comma-separated modules that define boosters")
    p.add_argument("--booster-dirs", "--booster_dirs_str", dest="booster_dirs", default="",
                   help="comma-separated folders (under --project-root) whose modules are imported to find boosters")
    p.add_argument("--max-depth", "--max_depth", dest="max_depth", type=int, default=1,
                   help="folder depth searched under each --booster-dirs folder (default 1)")
    p.add_argument("--py-file-re", "--py_file_re_str", dest="py_file_re", default=None,
                   help="only import files whose name matches this regular expression")
    p.add_argument("--project-root", "--project_root_path", dest="project_root", default=None,
                   help="put this folder first on the import path (default: the current folder)")
    p.add_argument("--state-backend", default=None,
                   help="state backend for flags, consumers and results of queues not defined by -m "
                        "(default: FUNBOOST_STATE_BACKEND, else sqlite)")
    p.add_argument("--state-url", default=None, help="the state backend's URL / path")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(prog="funboost", description="funboost command line",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("brokers", help="list installed broker kinds")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=_cmd_brokers)
    sub.add_parser("state-backends", help="list installed state backends").set_defaults(fn=_cmd_state_backends)
    sub.add_parser("queues", aliases=["show_all_queues"],
                   help="list the queues of the imported modules").set_defaults(fn=_cmd_queues)

    pb = sub.add_parser("publish", help="publish a JSON object of the function's arguments, with task options")
    pb.add_argument("queue")
    pb.add_argument("message", help="""a JSON object, e.g. '{"x": 1, "y": 2}'""")
    for flag, field, typ in _OPTION_FLAGS:
        pb.add_argument(flag, dest=field, type=typ, default=None)
    pb.add_argument("--options", default=None, help="more TaskOptions fields as a JSON object")
    pb.add_argument("--rpc", action="store_true", help="publish in RPC mode (a result is stored)")
    pb.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                    help="RPC mode, and wait up to SECONDS for the result and print it")
    pb.set_defaults(fn=_cmd_publish)

    pu = sub.add_parser("push", help="publish with the function's own arguments: push Q 1 2 --y=3")
    pu.add_argument("queue")
    pu.add_argument("arguments", nargs=argparse.REMAINDER,
                    help="positional values and --name=value keywords (JSON or Python literals, else text)")
    pu.set_defaults(fn=_cmd_push)

    for name, aliases, default_all in (("consume", [], False), ("consume_all", ["consume-all"], True)):
        c = sub.add_parser(name, aliases=aliases, help="consume queues (every imported queue by default) "
                           "until Ctrl-C / SIGTERM")
        if not default_all:
            c.add_argument("queues", nargs="*")
        else:
            c.set_defaults(queues=[])
        c.add_argument("--processes", "-p", type=int, default=1, help="processes per queue (default 1: this one)")
        c.add_argument("--status-interval", type=float, default=10.0,
                       help="seconds between status lines when stdout is not a terminal (default 10)")
        c.add_argument("--no-status", action="store_true", help="no status line")
        c.set_defaults(fn=_cmd_consume)
    mp = sub.add_parser(MP_CONSUME_COMMANDS[0], aliases=list(MP_CONSUME_COMMANDS[1:]),
                        help="consume each queue in processes of its own: mp_consume Q -p 3 | mp_consume --q1=2 --q2=3")
    mp.add_argument("arguments", nargs=argparse.REMAINDER)
    mpa = sub.add_parser("mp_consume_all", aliases=["mp-consume-all"],
                         help="consume every imported queue in N processes each")
    mpa.add_argument("process_num", type=int)
    mpa.add_argument("--status-interval", type=float, default=10.0)
    mpa.add_argument("--no-status", action="store_true")
    mpa.set_defaults(fn=_cmd_mp_consume_all)

    cl = sub.add_parser("clear", help="drop the waiting messages of queues")
    cl.add_argument("queues", nargs="+")
    cl.set_defaults(fn=_cmd_clear)
    co = sub.add_parser("count", help="messages waiting in a queue")
    co.add_argument("queue")
    co.set_defaults(fn=_cmd_count)
    st = sub.add_parser("status", help="a queue's sizes, flags, consumers and recent results")
    st.add_argument("queues", nargs="+")
    st.add_argument("--results", type=int, default=10, help="how many recent status records (default 10)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=_cmd_status)

    pa = sub.add_parser("pause", help="pause consuming queues everywhere (state backend flag)")
    pa.add_argument("queues", nargs="+")
    pa.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait until every live consumer shows the new value (from its heartbeat)")
    pa.set_defaults(fn=_cmd_pause_resume, action="pause")
    re_ = sub.add_parser("resume", aliases=["continue_consume"], help="resume paused queues")
    re_.add_argument("queues", nargs="+")
    re_.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait until every live consumer shows the new value (from its heartbeat)")
    re_.set_defaults(fn=_cmd_pause_resume, action="resume")
    sq = sub.add_parser("set-qps", aliases=["set_qps"], help="set a queue's rate (runs per second; 'none': no limit)")
    sq.add_argument("queue")
    sq.add_argument("qps")
    sq.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait until every live consumer shows the new value (from its heartbeat)")
    sq.set_defaults(fn=_cmd_set_qps)
    sc = sub.add_parser("set-concurrency", aliases=["set_concurrency", "set_concurrent_num"],
                        help="set the worker count of every consumer of a queue")
    sc.add_argument("queue")
    sc.add_argument("n", type=int)
    sc.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait until every live consumer shows the new value (from its heartbeat)")
    sc.set_defaults(fn=_cmd_set_concurrency)

    rs = sub.add_parser("result", help="a task's result (RPC mode) or status record")
    rs.add_argument("task_id")
    rs.add_argument("--queue", default=None, help="also search this queue's status records")
    rs.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait up to SECONDS for it")
    rs.set_defaults(fn=_cmd_result)
    jb = sub.add_parser("jobs", help="scheduled (APScheduler) jobs in a job store")
    jb.add_argument("queues", nargs="*", help="only these queues (default: every queue in the store)")
    jb.add_argument("--store", default="sqlite", choices=["sqlite", "redis", "sqlalchemy"],
                    help="the job store kind of ApsJobAdder (default sqlite)")
    jb.add_argument("--json", action="store_true")
    jb.set_defaults(fn=_cmd_jobs)

    sub.add_parser("web", help="the web manager (pip install funboost-web); every following argument is its own",
                   add_help=False)
    nb = sub.add_parser("new-broker", help="scaffold a broker plugin distribution (funboost-NAME) from the template")
    nb.add_argument("name")
    nb.add_argument("--dest", default=None, help="target directory (default ./funboost-NAME)")
    nb.set_defaults(fn=_cmd_new_broker)
    return p


def _split_raw_command(argv: list[str]) -> tuple[list[str], Optional[str], list[str]]:
    """(global options, command, rest) when the command takes its arguments unparsed (``web``,
    ``mp_consume``), else ([], None, [])."""
    globals_parser = _OneLineErrorParser(prog="funboost", add_help=False)
    _add_global_options(globals_parser)
    takes_value = {s for a in globals_parser._actions for s in a.option_strings if a.nargs != 0}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 if ("=" in argv[i] or argv[i] not in takes_value) else 2
    if i < len(argv) and argv[i] in WEB_COMMANDS + MP_CONSUME_COMMANDS:
        return argv[:i], argv[i], argv[i + 1:]
    return [], None, []


def _import_user_code(args: argparse.Namespace) -> None:
    root = os.path.abspath(args.project_root or ".")
    if root not in sys.path:
        sys.path.insert(0, root)
    for mod in filter(None, (m.strip() for m in args.import_modules.split(","))):
        try:
            importlib.import_module(mod)
        except Exception as exc:
            raise CliError(f"cannot import module {mod!r} (-m): {type(exc).__name__}: {exc}") from None
    if args.booster_dirs:
        from funboost.compat import BoosterDiscovery
        dirs = [d.strip() for d in args.booster_dirs.split(",") if d.strip()]
        try:
            BoosterDiscovery(root, dirs, max_depth=args.max_depth, py_file_re_str=args.py_file_re).auto_discovery()
        except Exception as exc:
            raise CliError(f"cannot import the boosters of --booster-dirs {args.booster_dirs!r}: "
                           f"{type(exc).__name__}: {exc}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    global_argv, raw_command, rest = _split_raw_command(argv)
    if raw_command is not None:
        p = _OneLineErrorParser(prog="funboost")
        _add_global_options(p)
        args = p.parse_args(global_argv)
    else:
        args = build_parser().parse_args(argv)
    try:
        if raw_command in WEB_COMMANDS:
            return _cmd_web(_web_argv(args, rest))
        _import_user_code(args)
        if raw_command in MP_CONSUME_COMMANDS:
            return _cmd_mp_consume(args, rest)
        return args.fn(args)
    except SystemExit:
        raise
    except BrokenPipeError:  # funboost brokers | head: the reader is gone, which is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is quiet
        return 0
    except Exception as exc:  # the command line shows errors as one line, never a traceback
        _fail(_describe(exc))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
