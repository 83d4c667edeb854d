"""Scheduled jobs on APScheduler 3.x: the job *pushes a message* to a booster's queue; consumers run it.

::

    from funboost import ApsJobAdder

    adder = ApsJobAdder(add, job_store_kind="sqlite")          # memory | sqlite | redis | sqlalchemy
    adder.add_push_job(trigger="interval", seconds=10, args=(1, 2), id="add_every_10s", replace_existing=True)
    adder.add_push_job(trigger="cron", hour=3, minute=0, kwargs={"x": 1, "y": 2}, id="nightly",
                       replace_existing=True)

Job stores:

* ``memory``: jobs live in this process only (each process that adds them fires them).
* ``sqlite``: APScheduler's ``SQLAlchemyJobStore`` on ``<user data dir>/apscheduler_jobs.sqlite3`` (one table
  per queue). Shared by every process of this host.
* ``redis``: APScheduler's ``RedisJobStore`` (keys ``funboost:aps:<queue>:*``) on ``FUNBOOST_APS_REDIS_URL``,
  else ``FUNBOOST_STATE_REDIS_URL``, else ``FUNBOOST_REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
  Shared by every host.
* ``sqlalchemy``: ``SQLAlchemyJobStore`` on ``FUNBOOST_APS_SQLALCHEMY_URL`` (else
  ``FUNBOOST_STATE_SQLALCHEMY_URL``), e.g. PostgreSQL. Shared by every host.

Job states are pickles (APScheduler's format); the shared stores made here load them through
:mod:`funboost.job_state`, which refuses a state naming anything but triggers, dates, time zones and plain
values, so a forged state in a store is dropped, never run.

Several scheduler processes on one shared store never fire a job twice: each pass over the due jobs runs
under a distributed lock of the state backend that matches the store (sqlite -> ``sqlite``, redis ->
``redis``, sqlalchemy -> ``sqlalchemy`` on the same URL), and each (job, run time) is additionally claimed
once before its message is pushed. Schedulers on a shared store poll it every ``poll_interval`` seconds, so
jobs added or removed by another process are seen within that time.

The scheduler thread is a daemon, and jobs run in funboost's own threads (never a
``concurrent.futures`` pool, which refuses work once the interpreter starts shutting down: the
"cannot schedule new futures after shutdown" crash). A keep-alive wait in the main thread at exit
(funboost.keepalive) keeps the process alive after the main script ends for as long as a started, unpaused scheduler of this process has jobs;
set ``FUNBOOST_NO_KEEPALIVE=1`` to let the process end with the main thread instead.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any, Optional, Union, cast

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.util import undefined

from funboost.job_state import guard_job_store, load_job_state
from funboost.keepalive import KeepAlive
from funboost.paths import user_data_dir
from funboost.state.base import StateBackend, get_state_backend
from funboost.timezone import configured_timezone
from funboost.utils.private_random import rng

if TYPE_CHECKING:  # pragma: no cover
    from apscheduler.job import Job

    from funboost.booster import Booster

logger = logging.getLogger("funboost.timing_job")

JOB_STORE_KINDS = ("memory", "sqlite", "redis", "sqlalchemy")
SHARED_STORE_LOCK_TTL = 30.0


def push_fun_params_to_broker(queue_name: str, *args: Any, **kwargs: Any) -> str:
    """The function every push job runs (module level, so job stores can pickle a reference to it):
    publish one message to ``queue_name``; returns the task id."""
    from funboost.booster import BoostersManager
    booster = BoostersManager.get_booster(queue_name)
    return booster.push(*args, **kwargs).task_id


class _PushJobExecutor(BaseExecutor):
    """Runs each job in a plain daemon thread (pushing a message is short), and claims each
    (job, run time) in the state backend first when the store is shared."""

    def __init__(self, claims: Optional[StateBackend], claim_prefix: str, owner: str, claim_ttl: float) -> None:
        super().__init__()
        self._claims = claims
        self._claim_prefix = claim_prefix
        self._owner = owner
        self._claim_ttl = claim_ttl

    def submit_job(self, job: "Job", run_times: list) -> None:
        if self._claims is not None:
            mine = []
            for rt in run_times:
                key = f"{self._claim_prefix}:{job.id}:{int(round(rt.timestamp() * 1000))}"
                try:
                    if self._claims.acquire_lock(key, self._owner, self._claim_ttl):
                        mine.append(rt)
                except Exception as exc:  # cannot tell whether another scheduler fired it: do not fire
                    logger.warning("could not claim run %s of job %s: %s", rt, job.id, exc)
            if not mine:
                return
            run_times = mine
        super().submit_job(job, run_times)

    def _do_submit_job(self, job: "Job", run_times: list) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:  # noqa: BLE001 - reported to the scheduler like APScheduler does
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=target, name=f"funboost-aps-{job.id}", daemon=True).start()


class FunboostBackgroundScheduler(BackgroundScheduler):
    """A BackgroundScheduler whose passes over due jobs are serialized across processes by a
    distributed lock, and which polls shared stores so it sees jobs added elsewhere."""

    def __init__(self, *args: Any, lock_backend: Optional[StateBackend] = None, lock_name: str = "",
                 owner: str = "", poll_interval: Optional[float] = None, **kwargs: Any) -> None:
        self.lock_backend = lock_backend
        self.lock_name = lock_name
        self.owner = owner or _owner_id()
        self.poll_interval = poll_interval
        self._explicit_timezone = kwargs.get("timezone") is not None
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def timezone(self) -> Any:
        """The scheduler's zone: the configured one (funboost.timezone) unless it was built with its own."""
        if not self._explicit_timezone:
            tz = configured_timezone()
            if tz is not None:
                return tz
        return self._timezone

    @timezone.setter
    def timezone(self, value: Any) -> None:  # (APScheduler sets it when configured)
        self._timezone = value

    def _create_trigger(self, trigger: Any, trigger_args: dict) -> Any:
        # a scheduler built without a time zone takes the configured one (FUNBOOST_TIMEZONE or an original
        # funboost_config.py's TIMEZONE, read when the job is added, after the config pick-up) over local time
        if not self._explicit_timezone:
            tz = configured_timezone()
            if tz is not None:
                trigger_args.setdefault("timezone", tz)
        return super()._create_trigger(trigger, trigger_args)

    def _process_jobs(self) -> Optional[float]:
        if self.state == STATE_PAUSED:
            return None
        if self.lock_backend is None:
            return self._cap(self._pass())
        try:
            got = self.lock_backend.acquire_lock(self.lock_name, self.owner, SHARED_STORE_LOCK_TTL)
        except Exception as exc:
            logger.warning("scheduler lock %r unavailable (%s); retrying", self.lock_name, exc)
            return 2.0
        if not got:  # another scheduler is processing this store right now
            return 0.05 + rng.random() * 0.15
        try:
            wait = self._pass()
        finally:
            try:
                self.lock_backend.release_lock(self.lock_name, self.owner)
            except Exception as exc:  # it expires on its own
                logger.warning("could not release scheduler lock %r: %s", self.lock_name, exc)
        return self._cap(wait)

    def _pass(self) -> Optional[float]:
        """One APScheduler pass over the due jobs. A job that left the store while the pass ran (removed by
        the user or by another process sharing the store) makes APScheduler's own ``remove_job`` of a
        finished job raise ``JobLookupError``, which would end the scheduler's thread and with it every
        later firing: the pass stops there and the next one starts at once."""
        try:
            return super()._process_jobs()
        except JobLookupError as exc:
            logger.info("scheduler: %s (removed meanwhile); processing the due jobs again", exc)
            return 0.0

    def _cap(self, wait: Optional[float]) -> Optional[float]:
        if self.poll_interval is None or self.state != STATE_RUNNING:
            return wait
        return self.poll_interval if wait is None else min(wait, self.poll_interval)


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:40]


def _redis_url() -> str:
    return (os.environ.get("FUNBOOST_APS_REDIS_URL") or os.environ.get("FUNBOOST_STATE_REDIS_URL")
            or os.environ.get("FUNBOOST_REDIS_URL") or "redis://127.0.0.1:6379/0")


def _sqlalchemy_url() -> str:
    url = os.environ.get("FUNBOOST_APS_SQLALCHEMY_URL") or os.environ.get("FUNBOOST_STATE_SQLALCHEMY_URL")
    if not url:
        raise ValueError("job_store_kind='sqlalchemy' needs FUNBOOST_APS_SQLALCHEMY_URL (or "
                         "FUNBOOST_STATE_SQLALCHEMY_URL), e.g. postgresql://postgres@127.0.0.1:5432/test")
    return url


def _sqlite_path() -> str:
    return os.environ.get("FUNBOOST_APS_SQLITE_PATH") or str(user_data_dir() / "apscheduler_jobs.sqlite3")


def _table_name(queue_name: str) -> str:
    import hashlib
    return f"funboost_aps_{_safe(queue_name)}_{hashlib.sha1(queue_name.encode()).hexdigest()[:8]}"


def _require_sqlalchemy(kind: str) -> None:
    try:
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ApsJobAdder(job_store_kind={kind!r}) keeps jobs in SQL and needs SQLAlchemy, an extra "
                          f"of funboost-core: pip install 'funboost-core[sqlalchemy]'") from exc


def make_job_store(kind: str, queue_name: str) -> tuple[Any, Optional[StateBackend]]:
    """The APScheduler job store for ``kind`` and the state backend whose locks guard it (None when the
    store is private to this process)."""
    kind = kind.lower()
    if kind == "memory":
        return MemoryJobStore(), None
    if kind in ("sqlite", "sqlalchemy"):
        _require_sqlalchemy(kind)
    if kind == "sqlite":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from sqlalchemy import create_engine
        engine = create_engine(f"sqlite:///{_sqlite_path()}", connect_args={"timeout": 30, "check_same_thread": False})
        return (guard_job_store(SQLAlchemyJobStore)(engine=engine, tablename=_table_name(queue_name)),
                get_state_backend("sqlite"))
    if kind == "sqlalchemy":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from funboost.state.sqlalchemy import _make_engine
        url = _sqlalchemy_url()
        return (guard_job_store(SQLAlchemyJobStore)(engine=_make_engine(url), tablename=_table_name(queue_name)),
                get_state_backend("sqlalchemy", url))
    if kind == "redis":
        try:
            import redis
            from apscheduler.jobstores.redis import RedisJobStore
        except ImportError as exc:
            raise ImportError("job_store_kind='redis' needs funboost-redis: pip install funboost-redis") from exc
        url = _redis_url()
        store = guard_job_store(RedisJobStore)(jobs_key=f"funboost:aps:{queue_name}:jobs",
                              run_times_key=f"funboost:aps:{queue_name}:run_times",
                              connection_pool=redis.ConnectionPool.from_url(url))
        return store, get_state_backend("redis", url)
    raise ValueError(f"unknown job_store_kind {kind!r}; use one of {JOB_STORE_KINDS}")


_TABLE_PREFIX = "funboost_aps_"


def _job_summary(kind: str, job_id: str, raw_state: bytes) -> dict[str, Any]:
    """One stored job as plain data. The state is APScheduler's own pickle, read by :func:`load_job_state`
    without restoring the job (APScheduler deletes jobs it cannot restore; a job whose state names
    anything but triggers, dates, zones and plain values is only reported as unreadable here)."""
    out: dict[str, Any] = {"store": kind, "queue": None, "id": job_id, "name": None, "trigger": None,
                           "next_run_time": None, "args": [], "kwargs": {}}
    try:
        state = load_job_state(raw_state)  # the job store's own format, written by APScheduler
    except Exception as exc:  # noqa: BLE001 - e.g. an argument whose class lives in the user's code
        out["error"] = f"job state not readable here: {type(exc).__name__}: {exc}"
        return out
    args = list(state.get("args") or ())
    if str(state.get("func", "")).endswith(":push_fun_params_to_broker") and args:
        out["queue"], args = args[0], args[1:]
    nrt = state.get("next_run_time")
    out.update(name=state.get("name"), trigger=str(state.get("trigger")), args=args,
               kwargs=dict(state.get("kwargs") or {}), next_run_time=nrt.isoformat() if nrt is not None else None)
    return out


def list_stored_jobs(kind: str, queues: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """The jobs in ApsJobAdder's ``kind`` store (sqlite, redis or sqlalchemy), of ``queues`` or of every
    queue found there, read directly from the store: no scheduler, no user code, nothing written.
    ``next_run_time`` None means paused. Used by ``funboost jobs``."""
    kind = kind.lower()
    if kind == "memory":
        raise ValueError("the memory job store lives inside its process; list its jobs with ApsJobAdder.get_jobs()")
    jobs: list[dict[str, Any]] = []
    if kind in ("sqlite", "sqlalchemy"):
        _require_sqlalchemy(kind)
        import sqlalchemy as sa
        if kind == "sqlite":
            path = _sqlite_path()
            if not os.path.exists(path):
                return []
            engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
        else:
            from funboost.state.sqlalchemy import _make_engine
            engine = _make_engine(_sqlalchemy_url())
        try:
            present = set(sa.inspect(engine).get_table_names())
            tables = ([t for t in map(_table_name, queues) if t in present] if queues is not None
                      else sorted(t for t in present if t.startswith(_TABLE_PREFIX)))
            with engine.connect() as conn:
                for t in tables:
                    rows = conn.execute(sa.text(f'SELECT id, job_state FROM "{t}" ORDER BY next_run_time'))
                    jobs.extend(_job_summary(kind, row[0], row[1]) for row in rows)
        finally:
            engine.dispose()
        return jobs
    if kind == "redis":
        try:
            import redis
        except ImportError as exc:
            raise ImportError("job_store_kind='redis' needs funboost-redis: pip install funboost-redis") from exc
        client = redis.Redis.from_url(_redis_url())
        try:
            keys = ([f"funboost:aps:{q}:jobs".encode() for q in queues] if queues is not None
                    else sorted(client.scan_iter(match="funboost:aps:*:jobs", count=1000)))
            for key in keys:
                for job_id, raw in sorted(cast("dict[bytes, bytes]", client.hgetall(key)).items()):
                    jobs.append(_job_summary(kind, job_id.decode(), raw))
        finally:
            client.close()
        return jobs
    raise ValueError(f"unknown job_store_kind {kind!r}; use one of {JOB_STORE_KINDS}")


class ApsJobAdder:
    """Add jobs that push messages to ``booster``'s queue, on a scheduler shared by every ApsJobAdder of
    the same (queue, store kind) in this process (``self.aps_obj``).

    ``is_auto_start`` starts the scheduler at once; ``is_auto_paused`` starts it paused: jobs are written
    to the store but this process does not fire them (for a process that only manages jobs while
    scheduler processes elsewhere fire them)."""

    _schedulers: dict[tuple[int, str, str], FunboostBackgroundScheduler] = {}
    _lock = threading.Lock()

    def __init__(self, booster: "Booster", job_store_kind: str = "memory", is_auto_start: bool = True,
                 is_auto_paused: bool = False, *, poll_interval: float = 1.0,
                 lock_backend: Union[StateBackend, str, None] = None, timezone: Any = None) -> None:
        self.booster = booster
        self.queue_name = booster.queue_name
        self.job_store_kind = job_store_kind.lower()
        key = (os.getpid(), self.job_store_kind, self.queue_name)
        with self._lock:
            sched = self._schedulers.get(key)
            if sched is None:
                sched = self._schedulers[key] = self._build(poll_interval, lock_backend, timezone)
        self.aps_obj = sched
        if is_auto_start and not sched.running:
            self.start(paused=is_auto_paused)

    def _build(self, poll_interval: float, lock_backend: Union[StateBackend, str, None],
               timezone: Any) -> FunboostBackgroundScheduler:
        store, guard = make_job_store(self.job_store_kind, self.queue_name)
        if isinstance(lock_backend, str):
            guard = get_state_backend(lock_backend)
        elif lock_backend is not None:
            guard = lock_backend
        owner = _owner_id()
        prefix = f"aps:{self.job_store_kind}:{self.queue_name}"
        executor = _PushJobExecutor(guard, prefix + ":run", owner, claim_ttl=3600)
        kw: dict[str, Any] = {}
        timezone = timezone if timezone is not None else configured_timezone()
        if timezone is not None:
            kw["timezone"] = timezone
        return FunboostBackgroundScheduler(
            jobstores={"default": store}, executors={"default": executor},
            # the job only publishes: overlapping runs are harmless, and a late run (a scheduler that
            # waited for the lock) still fires within the grace time
            job_defaults={"misfire_grace_time": 10, "coalesce": False, "max_instances": 1000},
            lock_backend=guard, lock_name=prefix + ":process", owner=owner,
            poll_interval=poll_interval if guard is not None else None, daemon=True, **kw)

    # ------------------------------------------------------------------ scheduler control
    def start(self, paused: bool = False) -> None:
        if not self.aps_obj.running:
            self.aps_obj.start(paused=paused)
        _keepalive.start()

    def pause(self) -> None:
        """Stop firing jobs in this process (jobs stay in the store)."""
        self.aps_obj.pause()

    def resume(self) -> None:
        self.aps_obj.resume()

    def shutdown(self, wait: bool = False) -> None:
        if self.aps_obj.running:
            self.aps_obj.shutdown(wait=wait)

    # ------------------------------------------------------------------ jobs
    def add_push_job(self, trigger: Any = None, args: Optional[Union[list, tuple]] = None,
                     kwargs: Optional[dict] = None, id: Optional[str] = None, name: Optional[str] = None,
                     misfire_grace_time: Any = undefined, coalesce: Any = undefined,
                     max_instances: Any = undefined, next_run_time: Any = undefined,
                     jobstore: str = "default", executor: str = "default", replace_existing: bool = False,
                     **trigger_args: Any) -> "Job":
        """Add a job that pushes ``booster.push(*args, **kwargs)`` on ``trigger`` ('date', 'interval',
        'cron' or a trigger object; ``trigger_args`` as in APScheduler: ``run_date``, ``seconds``,
        ``hour``, ``start_date``, ``end_date``...). On a shared store, give a stable ``id`` and
        ``replace_existing=True`` so that every process starting up adds the same job instead of a new one."""
        if id is None and self.aps_obj.lock_backend is not None:
            logger.warning("adding a job without id to the shared %r store of queue %r: every process that "
                           "runs this line adds another copy; pass id=... and replace_existing=True",
                           self.job_store_kind, self.queue_name)
        if kwargs:
            self.booster._check_kwargs({**self.booster._args_to_kwargs(tuple(args or ()), {}), **kwargs})
        elif args:
            self.booster._args_to_kwargs(tuple(args), {})  # fail now on arguments that do not fit
        return self.aps_obj.add_job(push_fun_params_to_broker, trigger, args=(self.queue_name, *(args or ())),
                                    kwargs=kwargs or {}, id=id, name=name or f"push to {self.queue_name}",
                                    misfire_grace_time=misfire_grace_time, coalesce=coalesce,
                                    max_instances=max_instances, next_run_time=next_run_time,
                                    jobstore=jobstore, executor=executor, replace_existing=replace_existing,
                                    **trigger_args)

    def get_jobs(self) -> list:
        return self.aps_obj.get_jobs()

    def get_job(self, job_id: str) -> Optional["Job"]:
        return self.aps_obj.get_job(job_id)

    def remove_job(self, job_id: str) -> None:
        self.aps_obj.remove_job(job_id)

    def remove_all_jobs(self) -> None:
        self.aps_obj.remove_all_jobs()

    def pause_job(self, job_id: str) -> None:
        self.aps_obj.pause_job(job_id)

    def resume_job(self, job_id: str) -> None:
        self.aps_obj.resume_job(job_id)

    @classmethod
    def all_schedulers(cls) -> list[FunboostBackgroundScheduler]:
        return [s for (pid, _, _), s in list(cls._schedulers.items()) if pid == os.getpid()]


class FunboostApsScheduler(FunboostBackgroundScheduler):
    """The original's process-wide ``funboost_aps_scheduler`` (memory job store): ``add_push_job(booster,
    trigger, args=..., kwargs=..., id=..., **trigger_args)`` adds a job that pushes to ``booster``'s queue;
    ``start()``, ``pause_job``, ``remove_job``... are APScheduler's. For jobs shared across processes use
    :class:`ApsJobAdder` with a shared store."""

    def add_push_job(self, func: "Booster", trigger: Any = None, args: Optional[Union[list, tuple]] = None,
                     kwargs: Optional[dict] = None, **job_kwargs: Any) -> "Job":
        queue_name = getattr(func, "queue_name", None)
        if queue_name is None:
            raise TypeError(f"add_push_job takes a booster (a @boost function), got {func!r}")
        if kwargs:
            func._check_kwargs({**func._args_to_kwargs(tuple(args or ()), {}), **kwargs})
        elif args:
            func._args_to_kwargs(tuple(args), {})  # fail now on arguments that do not fit
        job_kwargs.setdefault("name", f"push to {queue_name}")
        return self.add_job(push_fun_params_to_broker, trigger, args=(queue_name, *(args or ())),
                            kwargs=kwargs or {}, **job_kwargs)

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        _keepalive.start()


funboost_aps_scheduler = FunboostApsScheduler(
    executors={"default": _PushJobExecutor(None, "", "", 0)}, daemon=True,
    job_defaults={"misfire_grace_time": 10, "coalesce": False, "max_instances": 1000})


def _schedulers_have_jobs() -> bool:
    """A running (unpaused) scheduler of this process still has jobs to fire."""
    for s in ApsJobAdder.all_schedulers() + [funboost_aps_scheduler]:
        if s.state == STATE_RUNNING:
            try:
                if s.get_jobs():
                    return True
            except Exception:  # store unreachable for now: keep waiting for it
                return True
    return False


def _shutdown_schedulers() -> None:
    for s in ApsJobAdder.all_schedulers() + [funboost_aps_scheduler]:
        if s.running:
            try:
                s.shutdown(wait=False)
            except Exception:
                pass


_keepalive = KeepAlive("funboost-aps-keepalive", _schedulers_have_jobs, _shutdown_schedulers)

# the original's module path of ApsJobAdder (``from funboost.timing_job.timing_push import ApsJobAdder``): this
# module is also importable under it (docs/migrating.md)
sys.modules.setdefault(__name__ + ".timing_push", sys.modules[__name__])
