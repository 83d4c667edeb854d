"""One Celery app per process and per distinct configuration.

Boosters that share a configuration (the usual case: everything from the environment) share one app,
hence one producer pool and one worker. The cache is keyed by pid too: after ``fork`` a child builds
its own app instead of reusing the parent's sockets.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from celery import Celery

from funboost.process_local import ProcessLocalDict
from funboost_celery.lease import HEARTBEAT_TIMEOUT_OPTION, transport_for
from funboost_celery.options import CeleryOptions

_apps: ProcessLocalDict[str, Celery] = ProcessLocalDict()  # a forked child builds its own

REDIS_SCHEMES = ("redis", "rediss", "sentinel", "redis+socket")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def transport_family(url: str) -> str:
    """``redis``, ``amqp`` or ``other`` from a broker URL (first URL of a failover list)."""
    scheme = url.split(";", 1)[0].strip().split("://", 1)[0].lower()
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in AMQP_SCHEMES:
        return "amqp"
    return "other"


def config_key(options: CeleryOptions) -> str:
    return json.dumps({"url": options.resolved_broker_url(), "backend": options.resolved_result_backend(),
                       "vt": options.resolved_visibility_timeout(),
                       "hb": options.resolved_heartbeat_timeout(), "prio": options.max_priority,
                       "conf": options.celery_conf}, sort_keys=True, default=repr)


def build_conf(options: CeleryOptions) -> dict[str, Any]:
    """The Celery settings this plugin uses; ``celery_conf`` is applied on top."""
    url = options.resolved_broker_url()
    family = transport_family(url)
    backend = options.resolved_result_backend()
    transport_options: dict[str, Any] = {}
    conf: dict[str, Any] = {
        "broker_url": url,
        "result_backend": backend,
        "task_ignore_result": backend is None,
        # funboost's envelope is JSON; never accept pickle from the wire
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # at-least-once: ack after the function ended; a worker that dies mid-task gives it back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # like funboost's own consumers: do not hoard more than one message per free thread
        "worker_prefetch_multiplier": 1,
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }
    if family == "redis":
        if options.max_priority is not None:
            # one Redis list per priority level, so that 0..9 are distinct (kombu's default is 4 steps)
            transport_options["priority_steps"] = list(range(min(options.max_priority, 9) + 1))
        transport_options.update(redis_lease_options(options.resolved_visibility_timeout(),
                                                     options.resolved_heartbeat_timeout()))
        transport = transport_for(url.split(";", 1)[0].strip().split("://", 1)[0].lower())
        if transport is not None:
            conf["broker_transport"] = transport  # kombu's Redis transport with holder leases
    elif family == "amqp" and options.max_priority is not None:
        conf["task_queue_max_priority"] = options.max_priority
    user = dict(options.celery_conf)
    if transport_options or "broker_transport_options" in user:
        conf["broker_transport_options"] = {**transport_options, **user.pop("broker_transport_options", {})}
    conf.update(user)
    return conf


# kombu's default keys are shared by every Celery app on the database; plain Celery workers there keep
# the one-hour timeout and know no holder leases: funboost's entries live under keys of their own
UNACKED_KEY = "funboost_celery_unacked"


def redis_lease_options(visibility_timeout: float, heartbeat_timeout: float) -> dict[str, Any]:
    """kombu Redis transport options for holder leases (see :mod:`funboost_celery.lease`)."""
    return {
        HEARTBEAT_TIMEOUT_OPTION: heartbeat_timeout,
        # the age-based backstop, for entries without a holder tag only
        "visibility_timeout": visibility_timeout,
        "unacked_key": UNACKED_KEY,
        "unacked_index_key": f"{UNACKED_KEY}_index",
        "unacked_mutex_key": f"{UNACKED_KEY}_mutex",
        # a restorer killed while holding the scan mutex must not stop every scan for kombu's 5 minutes;
        # restoring twice is impossible anyway (each restore is a WATCH transaction)
        "unacked_mutex_expire": max(5, int(visibility_timeout)),
        # kombu scans every interval*throttle seconds (100 s by default): about 5 times per timeout
        "unacked_restore_interval": max(1, min(10, int(visibility_timeout / 5) or 1)),
        "unacked_restore_throttle": 1,
    }


def get_app(options: Optional[CeleryOptions] = None) -> Celery:
    """The Celery app of this process for ``options`` (created on first use)."""
    options = options if options is not None else CeleryOptions()

    def build() -> Celery:
        app = Celery(f"funboost_celery_{len(_apps)}", set_as_current=False)
        app.conf.update(build_conf(options))
        return app

    return _apps.get_or_create(config_key(options), build)
