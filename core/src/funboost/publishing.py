"""How a booster's publishes reach the broker: ``BoosterParams(publish_mode=...)``.

``"confirmed"`` (the default): ``push`` returns once the broker has the message. On kinds whose batch
publish costs about one round trip whatever its size (``Capabilities.pipelined_publish``), threads that
publish at the same moment share one batch and its confirmation (:class:`GroupCommit`): a thread that
finds no publish in progress sends its own message at once (one thread pays exactly one round trip per
push); threads that arrive while one is in progress queue up, and the next of them sends everything
queued in one batch. Each caller still returns only once *its* messages are confirmed, or raises the
error of its batch.

``"pipelined"``: ``push`` returns at once; a background thread of the publisher sends what was pushed in
batches, within a bounded window (``publish_window_ms`` after the first message of a batch, or as soon
as ``publish_window_max`` are waiting), and waits for the broker's confirmation of each batch. A batch
that fails is retried (``publish_retry_times``, with backoff) and then reported: logged, counted
(:attr:`PipelinedPublisher.stats`), and raised as :class:`PublishFailed` by the next ``push`` /
``flush()`` of the same booster. ``flush()`` returns once everything pushed before it is confirmed (or
raises for what failed); ``close()`` and interpreter exit flush. What the window holds lives only in this
process's memory until it is sent: a publisher **killed** (SIGKILL, power loss) inside the window loses
it; a publisher that exits normally or stops on SIGTERM / Ctrl-C does not.

Both wrap one primitive of the broker, ``Broker.publish(messages)``, which returns only when the broker
has every message of the list (the data-path contract), so no plugin code is needed beyond declaring the
capability.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Callable, Deque, Optional, Sequence

from funboost.exceptions import FunboostError, MessagesRefused
from funboost.plugins.broker import OutgoingMessage

logger = logging.getLogger("funboost.publishing")

Send = Callable[[Sequence[OutgoingMessage]], None]

PUBLISH_MODES = ("confirmed", "pipelined")
#: batches begun (``Broker.publish_begin``) and not yet confirmed, per pipelined publisher or ``publish_many``
MAX_BATCHES_IN_FLIGHT = 4


class PublishFailed(FunboostError):
    """Messages pushed in ``publish_mode="pipelined"`` could not be published (after the retries).

    Raised by the next ``push`` / ``publish`` / ``flush()`` of the booster whose messages failed (once per
    failure report). ``task_ids`` are the ids of the failed messages (the first 1,000), ``count`` how
    many failed; ``__cause__`` is the broker's last error.
    """

    def __init__(self, queue_name: str, count: int, task_ids: list[str], error: BaseException) -> None:
        self.queue_name = queue_name
        self.count = count
        self.task_ids = task_ids
        self.error = error
        shown = ", ".join(task_ids[:5]) + (" ..." if len(task_ids) > 5 else "")
        super().__init__(f"{count} message(s) pushed to {queue_name!r} were not published: "
                         f"{type(error).__name__}: {error} (task ids: {shown})")


def _nothing() -> None:
    """The wait of a batch that was sent synchronously."""


def _merged(reports: list[PublishFailed]) -> PublishFailed:
    """One error for several failure reports: the counts added, the last broker error as the cause."""
    if len(reports) == 1:
        return reports[0]
    ids = [t for r in reports for t in r.task_ids][:1000]
    last = reports[-1]
    err = PublishFailed(last.queue_name, sum(r.count for r in reports), ids, last.error)
    err.__cause__ = last.error
    return err


# ---------------------------------------------------------------------------------------------- confirmed
class _Waiter:
    """One caller queued behind a publish in progress. ``gate`` is a lock held until the caller may go
    on (the cheapest blocking primitive: no Condition, no Event)."""

    __slots__ = ("messages", "gate", "done", "error")

    def __init__(self, messages: Sequence[OutgoingMessage]) -> None:
        self.messages = messages
        self.gate = threading.Lock()
        self.gate.acquire()
        self.done = False  # False when released: this caller leads the next batch
        self.error: Optional[BaseException] = None


class GroupCommit:
    """Confirmed publishing shared by concurrent callers of one broker instance (group commit).

    ``publish`` returns when the broker confirmed the caller's messages, or raises the error of the batch
    that carried them (the whole batch failed or its outcome is unknown: the caller may publish again, so
    a message may be stored twice, never silently zero times). At most one batch is in flight at a time
    per instance; callers that arrive meanwhile are sent together by the next leader, which is the first
    of them (so no caller waits for more than two batches of others).
    """

    def __init__(self, send: Send, max_batch: int = 1000) -> None:
        self._send = send
        self._max = max_batch
        self._lock = threading.Lock()
        self._busy = False
        self._queue: Deque[_Waiter] = deque()
        self._last_callers = 1  # callers in the last batch sent by a promoted leader
        self._last_send = 0.0  # how long that batch took (seconds)

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        lock = self._lock
        lock.acquire()
        if not self._busy:  # nobody is publishing: send our own at once (the single-thread path)
            self._busy = True
            lock.release()
            try:
                self._send(messages)
            finally:
                self._hand_over()
            return
        w = _Waiter(messages)
        self._queue.append(w)
        lock.release()
        try:
            w.gate.acquire()  # released by the leader: our batch is done, or we lead the next one
        except BaseException:  # e.g. KeyboardInterrupt while waiting: never leave the queue leaderless
            self._abandon(w)
            raise
        if w.done:
            if w.error is not None:
                raise w.error
            return
        self._lead()
        if w.error is not None:
            raise w.error

    def _lead(self) -> None:
        """Send everything queued (up to ``max_batch`` messages, the leader's own first) as one batch.

        The callers of the batch that just finished are about to publish again; a leader that went
        ahead at once would send its own message nearly alone and make them queue for the round trip
        after (batches alternating one big, one tiny). So it lingers until as many callers wait as were
        in the last batch, for at most a quarter of that batch's round trip (never above 0.5 ms)."""
        want = self._last_callers
        if want > 1 and len(self._queue) < want:
            until = time.monotonic() + min(0.0005, self._last_send / 4)
            while len(self._queue) < want and time.monotonic() < until:
                time.sleep(0.00005)  # also hands the GIL to the returning callers
        with self._lock:
            group: list[_Waiter] = []
            n = 0
            q = self._queue
            while q and (not group or n + len(q[0].messages) <= self._max):
                w = q.popleft()
                group.append(w)
                n += len(w.messages)
        batch: list[OutgoingMessage] = []
        for w in group:
            batch.extend(w.messages)
        errors: list[Optional[BaseException]] = [None] * len(group)
        started = time.monotonic()
        try:
            try:
                self._send(batch)
            except MessagesRefused as exc:  # nothing was sent: the callers of refused messages get the error,
                errors = self._resend_others(group, exc)  # the others' messages go again, once, together
            except BaseException as exc:  # every caller of the batch gets it
                errors = [exc] * len(group)
        finally:
            self._last_send = time.monotonic() - started
            self._last_callers = len(group)
            leader = group[0]
            leader.error = errors[0]
            for w, error in zip(group[1:], errors[1:]):
                w.error = error
                w.done = True
                w.gate.release()
            self._hand_over()

    def _resend_others(self, group: list[_Waiter], refused: MessagesRefused) -> list[Optional[BaseException]]:
        bad = set(refused.indexes)
        errors: list[Optional[BaseException]] = []
        others: list[OutgoingMessage] = []
        start = 0
        for w in group:
            mine = range(start, start + len(w.messages))
            start += len(w.messages)
            hit = [i - mine.start for i in mine if i in bad]
            if hit:
                errors.append(MessagesRefused(str(refused), hit))
            else:
                errors.append(None)
                others.extend(w.messages)
        if others:
            try:
                self._send(others)
            except BaseException as exc:
                errors = [exc if e is None else e for e in errors]
        return errors

    def _abandon(self, w: _Waiter) -> None:
        with self._lock:
            try:
                self._queue.remove(w)
            except ValueError:
                return  # already in a batch being sent: its leader settles it without us
            if not w.gate.locked():  # we had been made leader: pass that on
                if self._queue:
                    self._queue[0].gate.release()
                else:
                    self._busy = False

    def _hand_over(self) -> None:
        """The batch in flight is settled: let the first queued caller lead the next one, or go idle."""
        with self._lock:
            if self._queue:
                self._queue[0].gate.release()  # done stays False: it leads
            else:
                self._busy = False


# ---------------------------------------------------------------------------------------------- pipelined
_live: "weakref.WeakSet[PipelinedPublisher]" = weakref.WeakSet()
_atexit_lock = threading.Lock()
_atexit_registered = False


def _forget_in_child() -> None:
    """A forked child must not send (again) what its parent's publishers hold: the parent does. The
    child's boosters build publishers of their own (they are kept per process id)."""
    for p in list(_live):
        p._inherited()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


_finalizer_pid = 0


def _register_atexit() -> None:
    """Registered at the first pipelined publisher, i.e. after the broker plugins were imported: atexit
    runs handlers last-in first-out, so this flush runs before the plugins' own exit handlers close the
    clients it needs (kafka-python's producer, for one).

    Also once per process as a ``multiprocessing`` finalizer: a ``multiprocessing.Process`` child started
    by fork or forkserver ends with ``os._exit`` after running these, never the ``atexit`` handlers."""
    global _atexit_registered, _finalizer_pid
    with _atexit_lock:
        if not _atexit_registered:
            atexit.register(flush_all_at_exit)
            _atexit_registered = True
        if _finalizer_pid != os.getpid():
            _finalizer_pid = os.getpid()
            from multiprocessing import util as mp_util
            mp_util.Finalize(None, flush_all_at_exit, exitpriority=100)


# set once the process flushes for its exit: a push from another thread then waits for the exit instead of
# raising in a producer loop that the drain is about to end (it returns nothing: its message is not taken)
_exiting = threading.Event()
_EXIT_WAIT_SECONDS = 60.0


def flush_all_at_exit(timeout: float = 30.0) -> None:
    """Flush every pipelined publisher of this process (runs at interpreter exit); failures are logged."""
    _exiting.set()
    deadline = time.monotonic() + timeout
    for p in list(_live):
        try:
            p.close(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # at exit nobody can catch it: the report is the log
            logger.error("funboost: pipelined publisher of %r: %s", p.name, exc)


class PipelinedPublisher:
    """Publish in the background, in batches bounded in time and count; see the module docstring.

    :param send: the broker's confirmed batch publish (``Broker.publish``); used for retries.
    :param begin: the broker's ``publish_begin`` (start a batch, return its wait): up to
        ``MAX_IN_FLIGHT`` batches are begun, in order, before the oldest one's confirmation is waited
        for. Default: ``send`` (one batch at a time).
    :param name: the queue name (for logs and errors).
    :param window: seconds a message may wait for companions before its batch is sent.
    :param max_batch: a batch is sent at once when this many messages wait.
    :param retries: further attempts of a failed batch (backoff 0.1 s, doubling, at most 2 s).
    """

    MAX_IN_FLIGHT = MAX_BATCHES_IN_FLIGHT

    def __init__(self, send: Send, name: str, window: float = 0.005, max_batch: int = 1000,
                 retries: int = 3, log: Optional[logging.Logger] = None,
                 begin: Optional[Callable[[Sequence[OutgoingMessage]], Callable[[], None]]] = None) -> None:
        self._send = send
        self._begin = begin
        self.name = name
        self._window = window
        self._max = max_batch
        self._retries = retries
        self._log = log or logger
        self._cond = threading.Condition(threading.Lock())
        self._buf: list[OutgoingMessage] = []
        self._first_at = 0.0  # monotonic time the oldest buffered message arrived
        self._idle = False  # the sender waits for a first message (needs a notify)
        self._added = 0  # messages taken by publish() so far
        self._settled = 0  # of those, confirmed or given up
        self._confirmed = 0
        self._failed = 0
        self._reports: list[PublishFailed] = []  # not yet raised to a caller
        self._flush_now = 0  # > 0: send without waiting out the window (flush / close)
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        _live.add(self)
        _register_atexit()

    # ----- callers -----
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Take the messages; return at once. Raises :class:`PublishFailed` for earlier messages that
        failed since the last report (these new ones are taken all the same)."""
        cond = self._cond
        with cond:
            if self._closed:
                if _exiting.is_set():  # the exit flush runs in another thread: this push never returns
                    cond.release()
                    try:
                        threading.Event().wait(_EXIT_WAIT_SECONDS)
                    finally:
                        cond.acquire()
                raise RuntimeError(f"the pipelined publisher of {self.name!r} is closed")
            buf = self._buf
            if not buf:
                self._first_at = time.monotonic()
            buf.extend(messages)
            self._added += len(messages)
            if self._thread is None:
                self._start()
            elif self._idle or len(buf) >= self._max:
                cond.notify()
            reports = self._reports
            if reports:
                self._reports = []
        if reports:
            raise _merged(reports)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Return once every message published before this call is confirmed by the broker; raise
        :class:`PublishFailed` if any of them (or earlier ones not reported yet) failed, ``TimeoutError``
        after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._added
            self._flush_now += 1
            self._cond.notify_all()
            try:
                while self._settled < target:
                    if self._thread is None or not self._thread.is_alive():
                        self._start()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"flush of {self.name!r}: {target - self._settled} message(s) still "
                                           f"unconfirmed after {timeout}s")
                    self._cond.wait(left if left is not None else 1.0)
            finally:
                self._flush_now -= 1
            reports, self._reports = self._reports, []
        if reports:
            raise _merged(reports)

    def close(self, timeout: Optional[float] = None) -> None:
        """Refuse new messages, flush, then stop the sending thread. Raises as :meth:`flush` does.

        Closed first, flushed after: a ``push`` from another thread while the flush runs (a producer loop
        still running when SIGTERM drains the process from the watcher thread, then ``os._exit``) raises
        instead of returning for a message that nothing would send any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self.flush(timeout)
        finally:
            _live.discard(self)

    def _inherited(self) -> None:
        """In a forked child: this object is the parent's; drop its buffer, never send from here."""
        self._cond = threading.Condition(threading.Lock())
        self._buf = []
        self._closed = True
        self._thread = None
        self._settled = self._added

    @property
    def stats(self) -> dict[str, int]:
        """``pushed`` (taken by publish), ``confirmed``, ``failed`` (given up, reported), ``pending``."""
        with self._cond:
            return {"pushed": self._added, "confirmed": self._confirmed, "failed": self._failed,
                    "pending": self._added - self._settled}

    # ----- the sending thread -----
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"funboost-pipelined:{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cond = self._cond
        in_flight: Deque[tuple[list[OutgoingMessage], Optional[Callable[[], None]], Optional[BaseException]]] = deque()
        while True:
            batch: Optional[list[OutgoingMessage]] = None
            with cond:
                if not self._buf and not in_flight:
                    if self._closed:
                        return
                    self._idle = True
                    cond.wait()
                    self._idle = False
                    continue
                if self._buf and len(in_flight) < self.MAX_IN_FLIGHT:
                    if not in_flight:  # nothing to confirm meanwhile: let the window fill
                        while len(self._buf) < self._max and not self._flush_now and not self._closed:
                            left = self._first_at + self._window - time.monotonic()
                            if left <= 0:
                                break
                            cond.wait(left)
                    if (not in_flight or len(self._buf) >= self._max or self._flush_now or self._closed
                            or time.monotonic() >= self._first_at + self._window):
                        batch = self._buf[:self._max]
                        del self._buf[:self._max]
                        if self._buf:
                            self._first_at = time.monotonic()
            if batch is not None:  # begin it; its confirmation is waited for later, in order
                try:
                    wait = self._begin(batch) if self._begin is not None else self._sent(batch)
                    in_flight.append((batch, wait, None))
                except Exception as exc:
                    in_flight.append((batch, None, exc))
                continue
            done, confirm, error = in_flight.popleft()  # nothing to begin now: settle the oldest
            if confirm is not None:
                try:
                    confirm()
                except Exception as exc:
                    error = exc
            if isinstance(error, MessagesRefused):  # nothing was sent: the refused ones fail, the rest go again
                refused = set(error.indexes)
                self._settle([m for i, m in enumerate(done) if i in refused], error)
                done = [m for i, m in enumerate(done) if i not in refused]
                error = None
                if done:
                    try:
                        self._send(done)
                    except Exception as exc:
                        error = exc
            if error is not None:
                error = self._send_with_retries(done, error)
            if done:
                self._settle(done, error)

    def _sent(self, batch: list[OutgoingMessage]) -> Callable[[], None]:
        self._send(batch)
        return _nothing

    def _settle(self, batch: list[OutgoingMessage], error: Optional[BaseException]) -> None:
        if error is not None:  # logged before flush() / the next push can see the failure
            self._log.error("funboost: %d pipelined message(s) of %r were not published after %d "
                            "attempt(s): %s: %s", len(batch), self.name, self._retries + 1,
                            type(error).__name__, error)
        with self._cond:
            self._settled += len(batch)
            if error is None:
                self._confirmed += len(batch)
            else:
                self._failed += len(batch)
                report = PublishFailed(self.name, len(batch), [m.task_id for m in batch[:1000]], error)
                report.__cause__ = error
                self._reports.append(report)
            self._cond.notify_all()

    def _send_with_retries(self, batch: list[OutgoingMessage], error: BaseException) -> Optional[BaseException]:
        """The first attempt failed with ``error``: try ``retries`` more times; the last error or None."""
        delay = 0.1
        for _ in range(self._retries):
            self._log.warning("funboost: pipelined publish of %d message(s) to %r failed (%s: %s); "
                              "retrying in %.1fs", len(batch), self.name, type(error).__name__, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                self._send(batch)
                return None
            except Exception as exc:
                error = exc
        return error
