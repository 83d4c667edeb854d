"""One Huey instance per queue, process and configuration: huey's queue *is* the Huey instance's name.

Each instance is a ``RedisHuey`` / ``SqliteHuey`` named after the funboost queue (:func:`huey_name`:
the queue name itself when huey's Redis storage keeps it as it is), with one task
registered on it: the queue's task (``funboost_huey.<queue>``), whose body hands the envelope to this
process's funboost consumer of the queue. The subclass changes only how huey's consumer *takes* and
*settles* a task (through :mod:`funboost_huey.storage`, so that a SIGKILLed consumer loses nothing on
Redis) and how the scheduler moves due tasks (atomically); enqueueing, serialization, the task
registry, the consumer, workers and scheduler are huey's own.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from typing import TYPE_CHECKING, Any, Optional

from huey import RedisHuey, SqliteHuey
from huey.api import Huey, Task, TaskWrapper

from funboost.foreign import Verb, envelope_from_foreign
from funboost.process_local import ProcessLocalDict

from funboost_huey.options import HueyOptions
from funboost_huey.storage import QueueOps, RedisQueueOps, queue_ops_for

if TYPE_CHECKING:  # pragma: no cover
    from funboost_huey.worker import HueyWorkerHost

TASK_MODULE = "funboost_huey"
#: no practical cap on a Huey instance's Redis pool (redis-py's default before 7.0): the worker threads
#: and publishers using it bound it
POOL_LIMIT = 2**31 - 1


#: the characters huey's ``RedisStorage.clean_name`` keeps of an instance name (it drops every other one)
_HUEY_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def huey_name(queue: str, storage: str = "redis", clean_name: bool = True) -> str:
    """The Huey instance (hence huey queue) name of the funboost queue ``queue``: one huey queue per
    funboost queue.

    huey's Redis storage keeps only ``[A-Za-z0-9_]`` of a name (``ux3-emails`` and ``ux3emails`` would
    share ``huey.redis.ux3emails``), so a name with any other character gets a suffix from a hash of the
    whole name: ``ux3-emails`` -> ``ux3emails_<10 hex digits>``. A name huey keeps as it is stays
    unchanged, as before (queues created by earlier versions keep their keys), and so does every name on
    SQLite storage or with ``huey_options={"clean_name": False}``, where huey uses names as they are.
    """
    if storage != "redis" or not clean_name or not _HUEY_NAME_CHARS.search(queue):
        return queue
    digest = hashlib.sha256(queue.encode("utf-8")).hexdigest()[:10]
    return f"{_HUEY_NAME_CHARS.sub('', queue)}_{digest}"


def legacy_huey_name(queue: str) -> str:
    """What huey's Redis storage made of ``queue`` before :func:`huey_name` (the name with only
    ``[A-Za-z0-9_]`` kept): where an earlier version left this queue's tasks."""
    return _HUEY_NAME_CHARS.sub("", queue)


def task_name(queue: str) -> str:
    """The name huey's registry (and each huey message) gives the task of ``queue``."""
    return f"{TASK_MODULE}.{queue}"


class FunboostTaskFailed(Exception):
    """Raised from the huey task when the funboost function failed for good (after funboost's retries),
    so that huey signals an error (and stores it, with ``store_results``). huey's retries are 0."""


class _FunboostHuey:
    """Mixed into ``RedisHuey`` / ``SqliteHuey``: huey's consumer takes through :class:`QueueOps` under
    the worker host's holder, settles after ``execute``, and the scheduler moves due tasks atomically."""

    queue_ops: QueueOps
    funboost_queue: str
    #: huey's storage drops characters of names, so :func:`huey_name` renames (Redis, ``clean_name``)
    funboost_renames: bool = False
    funboost_task: TaskWrapper
    #: the worker host of this process that consumes this queue (set by its ``register_queue``)
    funboost_host: Optional["HueyWorkerHost"] = None
    #: per worker thread: ``revoke_id`` of the task it executes (see :meth:`delete`)
    _funboost_running: threading.local

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._funboost_running = threading.local()

    def dequeue(self) -> Optional[Task]:  # called by huey's Worker.loop
        host = self.funboost_host
        if host is None or not host.accepting.is_set():
            # paused, outside the run-time window, or this process's booster left: take nothing
            self.queue_ops.flush_thread()
            if host is not None:
                host.accepting.wait(0.5)
            return None
        holder = host.holder_id()
        # Redis blocks on the list; huey's workers poll a storage that cannot block, with their backoff
        timeout = host.read_timeout if self.storage.blocking else 0  # type: ignore[attr-defined]
        data, unrevoked = self.queue_ops.take_task(holder, timeout)
        if data is None:
            return None
        try:
            task = self.deserialize_task(data)  # type: ignore[attr-defined]
        except Exception as exc:  # not a huey message of this queue's task: funboost dead-letters it
            target = self._misrouted_to(data)
            if target is not None:  # left here by the old name mapping: to its own queue, not dead
                self.queue_ops.forward(holder, data, target)
                return None
            host.run_undecodable(data, exc)
            self.queue_ops.settle_soon(holder, data)
            return None
        task._funboost_taken = (holder, data)
        task._funboost_unrevoked = unrevoked
        return task

    def _misrouted_to(self, data: bytes) -> Optional[str]:
        """The huey queue name a message belongs to, when it is another funboost queue's task that shares
        this queue's storage name only through the name mapping of earlier versions (``ux3-emails`` and
        ``ux3emails`` both used ``huey.redis.ux3emails``); None otherwise."""
        try:
            name = str(self.serializer.deserialize(data).name)  # type: ignore[attr-defined]
        except Exception:
            return None
        prefix = f"{TASK_MODULE}."
        if not self.funboost_renames or not name.startswith(prefix):
            return None
        queue = name[len(prefix):]
        mine = self.storage.name  # type: ignore[attr-defined]
        target = huey_name(queue)
        if queue == self.funboost_queue or legacy_huey_name(queue) != mine or target == mine:
            return None
        return target

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        if getattr(task, "_funboost_unrevoked", False):
            # the take saw huey's result hash empty: no revoke flag existed then (huey's own lookup runs
            # a moment later; a revoke in between is missed by either). Only for this first check.
            task._funboost_unrevoked = False
            return False
        return super().is_revoked(task, timestamp, peek)  # type: ignore[misc]

    def delete(self, key: str) -> Any:
        # huey clears the task's revoke flag after each run: sent with the worker's next take instead of a
        # command of its own (same thread; flushed before the worker idles or stops)
        if key == getattr(self._funboost_running, "revoke_id", None) and self.queue_ops.clear_soon(key):
            return True
        return super().delete(key)  # type: ignore[misc]

    def add_schedule(self, task: Task) -> None:
        taken = getattr(task, "_funboost_taken", None)
        if taken is None:
            return super().add_schedule(task)  # type: ignore[misc]
        task._funboost_taken = None
        eta = task.eta or dt.datetime.fromtimestamp(0)
        self.queue_ops.schedule(taken[0], taken[1], eta)  # from in-flight to the schedule, atomically

    def execute(self, task: Task, timestamp: Any = None) -> Any:
        running = self._funboost_running
        running.revoke_id = task.revoke_id if getattr(task, "_funboost_taken", None) is not None else None
        try:
            return super().execute(task, timestamp)  # type: ignore[misc]
        finally:
            running.revoke_id = None
            taken = getattr(task, "_funboost_taken", None)
            if taken is not None:
                task._funboost_taken = None
                if getattr(task, "_funboost_give_back", False):
                    self.queue_ops.give_back(*taken)
                else:
                    self.queue_ops.settle_soon(*taken)  # sent with this worker's next take

    def read_schedule(self, timestamp: Any = None) -> list:  # called by huey's Scheduler.loop
        self.queue_ops.move_due()
        return []  # already in the queue: nothing for the scheduler to enqueue


class FunboostRedisHuey(_FunboostHuey, RedisHuey):
    pass


class FunboostSqliteHuey(_FunboostHuey, SqliteHuey):
    pass


_hueys: ProcessLocalDict[tuple[str, str], Huey] = ProcessLocalDict()  # a forked child builds its own


def get_huey(queue: str, options: Optional[HueyOptions] = None) -> Huey:
    """The Huey instance of ``queue`` in this process for ``options`` (created on first use), with the
    queue's task registered."""
    options = options if options is not None else HueyOptions()
    return _hueys.get_or_create((options.config_key(), queue), lambda: _build(queue, options))


def _build(queue: str, options: HueyOptions) -> Huey:
    storage = options.resolved_storage()
    kwargs: dict[str, Any] = {"results": options.store_results}
    if storage == "redis":
        from redis import ConnectionPool

        cls: type = FunboostRedisHuey
        # every worker thread blocks on the queue holding a connection of this pool: redis-py >= 7 caps a
        # pool at 100 by default, which concurrent_num near 100 exhausts (MaxConnectionsError)
        kwargs["connection_pool"] = ConnectionPool.from_url(options.resolved_redis_url(),
                                                            max_connections=POOL_LIMIT)
    else:
        cls = FunboostSqliteHuey
        kwargs["filename"] = options.resolved_sqlite_filename()
    kwargs.update(options.huey_options)
    kwargs["utc"] = True  # huey's naive datetimes are UTC, as funboost.foreign reads them
    renames = storage == "redis" and bool(kwargs.get("clean_name", True))
    huey = cls(huey_name(queue, storage, renames), **kwargs)
    huey.funboost_renames = renames
    huey.queue_ops = queue_ops_for(huey, storage)
    huey.funboost_queue = queue
    huey.funboost_task = _register_task(huey, queue)
    return huey


def _register_task(huey: Huey, queue: str) -> TaskWrapper:
    def run(*args: Any, task: Task, **kwargs: Any) -> Any:
        host = huey.funboost_host  # type: ignore[attr-defined]
        if host is None:  # no consumer of this queue here (anymore): back to the queue, unchanged
            task._funboost_give_back = True
            return None
        outcome = host.run_message(queue, envelope_from_foreign(args, kwargs, task.id, framework="huey"),
                                   eta=task.eta)
        if outcome.verb is Verb.ACK:
            return outcome.result
        if outcome.verb is Verb.IGNORE:
            return None  # funboost published the next message; nothing to record for this one
        if outcome.verb is Verb.REJECT:
            task._funboost_give_back = True
            return None
        raise FunboostTaskFailed(outcome.error)

    run.__name__ = run.__qualname__ = queue
    run.__module__ = TASK_MODULE
    # retries=0: funboost's runner is the only retry mechanism; context: the body needs the task's id
    return huey.task(retries=0, context=True, name=queue)(run)


def adopt_legacy_tasks(huey: Huey, options: HueyOptions) -> int:
    """Move the tasks an earlier version left for this queue under its old huey name (see
    :func:`huey_name`) into its own huey queue; how many. Only for a Redis queue whose name changed.

    Ready and delayed tasks of this queue's task move one by one, each in one script (a consumer of the
    old version taking it at the same moment gets it instead, never both); other tasks stay. Tasks held by
    a dead consumer of the old name are first put back into the old queue, as a reclaim pass would.
    """
    queue = huey.funboost_queue  # type: ignore[attr-defined]
    storage_name = huey.storage.name  # type: ignore[attr-defined]
    legacy = legacy_huey_name(queue)
    if not huey.funboost_renames or legacy == storage_name:  # type: ignore[attr-defined]
        return 0
    old = RedisHuey(legacy, connection_pool=huey.storage.pool,  # type: ignore[attr-defined]
                    **{k: v for k, v in options.huey_options.items() if k != "connection_pool"})
    ops = huey.queue_ops  # type: ignore[attr-defined]
    ops.reclaim_dead_of(RedisQueueOps(old), options)
    mine = task_name(queue)

    def is_mine(data: bytes) -> bool:
        try:
            return str(huey.serializer.deserialize(data).name) == mine
        except Exception:
            return False

    return ops.adopt_from(old.storage.queue_key, old.storage.schedule_key, is_mine)
