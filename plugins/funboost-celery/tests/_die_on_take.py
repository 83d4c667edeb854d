"""A consumer that dies the moment it has taken one message from Redis, before its own client writes
anything about it: ``python _die_on_take.py QUEUE URL MARKER_DIR worker|fetch``.

That is the window in which kombu's ``BRPOP`` (or ``RPOP`` for ``basic_get``) loses a message: it has left
its list and no unacked entry exists yet. ``worker``: the booster's real Celery worker takes it;
``fetch``: funboost's pull path (``CeleryBroker.fetch``). The lease is short (2 s) and kombu's age-based
backstop long (an hour), so only the holder lease can bring the message back."""
import os
import sys

from funboost_celery import lease

queue, url, marker_dir, mode = sys.argv[1:5]


def die_on_take(self, message, delivery_tag):  # noqa: ANN001 - replaces HolderQoS.append
    os._exit(9)


lease.HolderQoS.append = die_on_take
cfg = {"broker_url": url, "heartbeat_timeout": 2.0, "visibility_timeout": 3600.0}
if mode == "worker":
    from funboost.testing.workers import marker_worker
    marker_worker("CELERY", queue, cfg, marker_dir, 0.0, 1)
else:
    from funboost_celery import CeleryBroker, CeleryOptions
    CeleryBroker(queue, CeleryOptions(**cfg)).fetch(1, 30)
sys.exit("took nothing within 30 s")
