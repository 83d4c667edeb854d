"""Keeping a process alive after its main script ends, and stopping it gracefully on SIGTERM / SIGINT.

Consumers and schedulers run in daemon threads. Users of the original funboost end a script with
``f.consume()`` and expect the process to keep working. :class:`KeepAlive` registers a wait that the
interpreter runs *in the main thread* when the main script has ended (a threading at-exit callback, run
before non-daemon threads are joined): it returns, and the interpreter exits normally, once nothing is
left to do. Waiting in the main thread rather than in a helper thread matters twice: under eventlet a
green helper thread that joins the main thread never yields (``consume()`` never returned), and signal
handlers only run in the main thread. ``FUNBOOST_NO_KEEPALIVE=1`` turns the wait off.

Graceful shutdown (:func:`install_signal_handlers`, called by ``consume()`` from the main thread):

* the first SIGTERM or SIGINT stops fetching on every consumer of the process, lets running tasks finish
  within ``shutdown_timeout`` (``BoosterParams.shutdown_timeout``, env ``FUNBOOST_SHUTDOWN_TIMEOUT``),
  hands prefetched messages that did not start back to the broker, flushes acks and status records,
  logs one summary line and exits with status 0;
* a second signal exits at once (status 128 + signal number).

Handlers the user installed (anything but the defaults) are left alone; ``FUNBOOST_NO_SIGNAL_HANDLERS=1``
turns the handlers off.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

logger = logging.getLogger("funboost.shutdown")

DEFAULT_SHUTDOWN_TIMEOUT = 30.0

# CPython 3.12.0-3.12.2 refuse to start any thread once the main script has ended (gh-113964, fixed in
# 3.12.3): thread pools that grow on demand and the scheduler's job threads fail there
THREADS_STOP_AT_SCRIPT_END = (3, 12, 0) <= sys.version_info[:3] < (3, 12, 3)


def default_shutdown_timeout() -> float:
    return float(os.environ.get("FUNBOOST_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT))


class _ShutdownState:
    def __init__(self) -> None:
        self.requested = threading.Event()  # a first signal arrived
        self.done = threading.Event()  # the graceful stop has finished
        self.signum: Optional[int] = None
        self.lock = threading.Lock()  # installing the handlers and the watcher (held only briefly)
        # the drain itself: never the lock above, which consume() takes through install_signal_handlers()
        # while a drain in another thread may be waiting for that very consume() to finish
        self.drain_lock = threading.Lock()
        self.main_waits_in_funboost = False  # the main thread sits in a funboost wait (not in user code)
        self.installed = False
        self.watcher_pid: Optional[int] = None  # the process whose watcher thread is running


_shutdown = _ShutdownState()


def shutdown_requested() -> bool:
    return _shutdown.requested.is_set()


def mark_main_waiting(waiting: bool) -> None:
    """The main thread now waits in funboost code that calls :func:`graceful_stop` once a signal came."""
    _shutdown.main_waits_in_funboost = waiting


def reset_after_fork() -> None:
    """A forked child starts with no shutdown state of its own (the parent's handlers stay installed)."""
    global _shutdown
    installed = _shutdown.installed
    _shutdown = _ShutdownState()
    _shutdown.installed = installed


def _sleep_main(seconds: float) -> None:
    """Sleep in the main thread so that signal handlers run promptly (and greenlets under gevent /
    eventlet, whose patched sleep yields to the hub)."""
    time.sleep(seconds)


class KeepAlive:
    def __init__(self, name: str, still_needed: Callable[[], bool],
                 on_exit: Optional[Callable[[], None]] = None) -> None:
        self.name = name
        self.still_needed = still_needed
        self.on_exit = on_exit
        self._registered = False
        self._waited = False
        self._lock = threading.Lock()

    def start(self) -> None:
        if os.environ.get("FUNBOOST_NO_KEEPALIVE") == "1":
            return
        with self._lock:
            if self._registered:
                return
            self._registered = True
        if THREADS_STOP_AT_SCRIPT_END:
            logger.warning("Python %s cannot start threads after the main script ends (CPython gh-113964, fixed "
                           "in 3.12.3): end the script with funboost.ctrl_c_recv() to keep consuming, or "
                           "upgrade Python", ".".join(map(str, sys.version_info[:3])))
        # threading's at-exit callbacks run before non-daemon threads are joined and before
        # concurrent.futures refuses new work; eventlet's patched threading skips them, so the plain
        # atexit registration is the fallback (the second call finds nothing left to wait for)
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            try:
                register(self._wait_at_exit)
            except RuntimeError:  # shutdown already under way
                pass
        atexit.register(self._wait_at_exit)

    def _wait_at_exit(self) -> None:
        if self._waited:
            return
        self._waited = True
        _shutdown.main_waits_in_funboost = True
        try:
            while self.still_needed() and not _shutdown.requested.is_set():
                _sleep_main(0.2)
            if _shutdown.requested.is_set():
                graceful_stop()  # runs the drain here, in the main thread (once per process)
        except KeyboardInterrupt:  # a SIGINT while the user replaced our handler with the default one
            graceful_stop()
        finally:
            _shutdown.main_waits_in_funboost = False
        if self.on_exit is not None:
            self.on_exit()


# ---------------------------------------------------------------------------------------------- shutdown
def stop_all_consumers(timeout: Optional[float] = None) -> list[dict]:
    """Stop every consumer of this process at once (each drains in its own thread) and return their
    summaries. ``timeout`` overrides each booster's ``shutdown_timeout``."""
    from funboost.booster import BoostersManager
    boosters = []
    for b in BoostersManager.all_boosters():
        # a consume() under way in another thread finishes first (and is stopped here), or sees the
        # shutdown request and does not start: no consumer can slip past a graceful stop
        with b._consume_lock:
            if b.consumer is not None:
                boosters.append(b)
    summaries: list[dict] = []
    lock = threading.Lock()

    def stop_one(b) -> None:
        t = timeout if timeout is not None else b.params.shutdown_timeout
        s = b.stop_consume(t)
        if s:
            with lock:
                summaries.append(s)

    threads = [threading.Thread(target=stop_one, args=(b,), name=f"funboost-stop-{b.queue_name}", daemon=True)
               for b in boosters]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins: the main thread stays responsive to a second signal
    return summaries


#: what plugins must finish before a drained process ends (see :func:`on_graceful_exit`)
_exit_waits: list[Callable[[], Any]] = []


def on_graceful_exit(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register ``fn`` (no arguments) to run after a graceful stop has drained the consumers and flushed the
    pipelined publishers, before the process ends: e.g. a plugin waiting for messages it could not hand to
    its broker yet. A drain that ends the process with ``os._exit`` (the main thread in the user's own
    code) skips ``atexit``, so a plugin registers here too. Idempotent; returns ``fn`` (a decorator)."""
    if fn not in _exit_waits:
        _exit_waits.append(fn)
    return fn


def _run_exit_waits() -> None:
    for fn in list(_exit_waits):
        try:
            fn()
        except Exception:  # noqa: BLE001 - one plugin's failure must not keep the others from finishing
            logger.exception("funboost: exit wait %r failed", fn)


def graceful_stop(timeout: Optional[float] = None) -> None:
    """Drain every consumer of the process once and log one summary line."""
    with _shutdown.drain_lock:
        if _shutdown.done.is_set():
            return
        started = time.monotonic()
        summaries = stop_all_consumers(timeout)
        publishing = sys.modules.get("funboost.publishing")
        if publishing is not None:  # pipelined publishers: send what their windows hold (os._exit follows)
            publishing.flush_all_at_exit()
        _run_exit_waits()
        _stop_schedulers()
        children = _stop_children(timeout)
        _shutdown.done.set()
    name = signal.Signals(_shutdown.signum).name if _shutdown.signum else "shutdown"
    parts = []
    if summaries:
        finished = sum(s["finished"] for s in summaries)
        released = sum(s["released"] for s in summaries)
        unfinished = sum(s["unfinished"] for s in summaries)
        parts.append(f"stopped consuming {', '.join(s['queue'] for s in summaries)}: {finished} running "
                     f"task(s) finished, {released} prefetched message(s) handed back to the broker, "
                     f"acks and status records flushed")
        if unfinished:
            parts.append(f"{unfinished} task(s) still running at the shutdown_timeout deadline were cut off")
    if children is not None:
        drained, killed = children
        parts.append(f"{drained} child process(es) drained and exited" + (f", {killed} killed" if killed else ""))
    logger.warning("%s: %s (%.1fs)", name, "; ".join(parts) or "nothing was running", time.monotonic() - started)


def _stop_children(timeout: Optional[float]) -> Optional[tuple[int, int]]:
    mod = sys.modules.get("funboost.multiprocess")
    if mod is None or not mod.live_children():
        return None
    # the children drain with their own shutdown_timeout; give them that and time to start and flush
    wait = (timeout if timeout is not None else default_shutdown_timeout()) + 30
    return mod.stop_children(_shutdown.signum, wait)


def _stop_schedulers() -> None:
    mod = sys.modules.get("funboost.timing_job")
    if mod is not None:
        try:
            mod._shutdown_schedulers()
        except Exception as exc:  # never let a scheduler keep the process from exiting
            logger.error("could not stop the schedulers: %s", exc)


def _flush_stdio() -> None:
    for h in logging.getLogger().handlers + logging.getLogger("funboost").handlers:
        try:
            h.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _drain_then_exit() -> None:
    """The main thread is in the user's own code (a ``while True: sleep`` loop): drain from here, then end
    the process with status 0 (the user's loop would never end on its own)."""
    graceful_stop()
    _flush_stdio()
    os._exit(0)


def _on_signal(signum: int, frame) -> None:
    if _shutdown.requested.is_set():
        # second signal: the user does not want to wait for running tasks
        logger.warning("%s again: exiting now without waiting for running tasks", signal.Signals(signum).name)
        mod = sys.modules.get("funboost.multiprocess")
        if mod is not None:
            mod.forward_signal(signum)  # the children were told once already: this makes them exit at once
        _flush_stdio()
        os._exit(128 + signum)
    # Only flag the request here. A handler runs between two bytecodes of the main thread, which may hold
    # threading's internal locks at that moment (it may be starting a thread itself): starting a thread or
    # logging from here can deadlock the main thread for good. The watcher thread does the rest.
    _shutdown.signum = signum
    _shutdown.requested.set()


def _watch_for_shutdown(state: _ShutdownState) -> None:
    """Waits for the first signal: logs it and, when the main thread is in the user's own code (not in a
    funboost wait that drains by itself), drains from here and ends the process."""
    state.requested.wait()
    if state is not _shutdown:  # replaced after a fork: this process's own watcher takes over
        return
    name = signal.Signals(state.signum).name if state.signum else "shutdown"
    logger.warning("%s received: stopping consumers gracefully (running tasks may take up to their "
                   "shutdown_timeout; send it again to exit at once)", name)
    if not state.main_waits_in_funboost:
        _drain_then_exit()
    # otherwise the funboost wait in the main thread sees the request and drains there


def _ensure_watcher() -> None:
    state = _shutdown
    with state.lock:
        if state.watcher_pid == os.getpid():
            return
        state.watcher_pid = os.getpid()
    threading.Thread(target=_watch_for_shutdown, args=(state,), name="funboost-shutdown", daemon=True).start()


def _is_default(handler) -> bool:
    return handler in (signal.SIG_DFL, signal.default_int_handler, None)


def install_signal_handlers() -> bool:
    """Install the SIGTERM / SIGINT handlers (main thread only; user-installed handlers are kept).
    True if funboost's handlers are in place."""
    if os.environ.get("FUNBOOST_NO_SIGNAL_HANDLERS") == "1":
        return False
    _ensure_watcher()  # also in a forked child, whose handlers were inherited but whose threads were not
    with _shutdown.lock:
        if _shutdown.installed:
            return True
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                if not _is_default(signal.getsignal(sig)):
                    continue
                _install_one(sig)
        except ValueError:  # not the main thread (the check itself: green threads share the OS main thread)
            return False
        _shutdown.installed = True
    return True


def _install_one(sig: int) -> None:
    gevent_mod = sys.modules.get("gevent.monkey")
    if gevent_mod is not None and gevent_mod.is_module_patched("signal"):
        # under gevent a plain handler may run inside the hub; gevent's own runs it in a new greenlet
        import gevent
        gevent.signal_handler(sig, _on_signal, sig, None)
        return
    signal.signal(sig, _on_signal)


def wait_for_shutdown() -> int:
    """Block the main thread until SIGTERM / SIGINT, drain the consumers and return 0 (the CLI's
    ``consume`` and ``ctrl_c_recv`` use it)."""
    install_signal_handlers()
    _shutdown.main_waits_in_funboost = True
    try:
        while not _shutdown.requested.is_set():
            _sleep_main(0.2)
    except KeyboardInterrupt:  # the default SIGINT handler was kept (user handlers, or not main thread)
        _shutdown.requested.set()
        _shutdown.signum = signal.SIGINT
    graceful_stop()
    return 0
