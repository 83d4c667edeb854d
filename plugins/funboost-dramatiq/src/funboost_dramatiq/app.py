"""dramatiq brokers built from :class:`DramatiqOptions`.

Publishing and pulling (``fetch``) share one dramatiq broker per process and configuration (cached per
pid: a forked child builds its own sockets). A worker host builds a broker of its own, because
``dramatiq.Worker.start`` attaches itself to its broker for good (a broker outlives no worker here).
"""
from __future__ import annotations

import json

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries

from funboost.process_local import ProcessLocalDict
from funboost_dramatiq.options import DramatiqOptions

_brokers: ProcessLocalDict[str, dramatiq.Broker] = ProcessLocalDict()


def config_key(options: DramatiqOptions) -> str:
    return json.dumps({"url": options.resolved_broker_url(), "ns": options.namespace,
                       "hb": options.resolved_heartbeat_timeout(), "prio": options.max_priority,
                       "confirm": options.confirm_delivery}, sort_keys=True)


def middleware() -> list:
    """Only what the funboost actors use. ``Retries`` with no retries (funboost's runner is the only retry;
    the middleware still moves a message whose actor raised to dramatiq's dead-letter queue) and
    ``CurrentMessage`` (the actor reads its message id and redelivery flag). dramatiq's other defaults have
    a funboost control in their place and would only cost each message their hook calls: ``TimeLimit``
    (``function_timeout``; its 10-minute default would kill long funboost tasks), ``AgeLimit``
    (``msg_expire_seconds``), ``Callbacks`` / ``Pipelines`` (funboost publishes no such options),
    ``ShutdownNotifications`` (funboost's graceful stop)."""
    return [Retries(max_retries=0), CurrentMessage()]


def build_broker(options: DramatiqOptions) -> dramatiq.Broker:
    url = options.resolved_broker_url()
    if options.family() == "redis":
        from dramatiq.brokers.redis import RedisBroker
        return RedisBroker(url=url, namespace=options.namespace, middleware=middleware(),
                           heartbeat_timeout=int(options.resolved_heartbeat_timeout() * 1000))
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    return RabbitmqBroker(url=url, middleware=middleware(), max_priority=options.max_priority,
                          confirm_delivery=options.confirm_delivery)


def get_broker(options: DramatiqOptions) -> dramatiq.Broker:
    """This process's dramatiq broker for publishing and pulling with ``options``."""
    return _brokers.get_or_create(config_key(options), lambda: build_broker(options))
