"""``broker_exclusive_config`` of the ``celery`` kind, with environment-variable fallbacks.

Connection settings come from (first wins): ``broker_exclusive_config``, the environment
(``FUNBOOST_CELERY_BROKER_URL``, ``FUNBOOST_CELERY_RESULT_BACKEND``,
``FUNBOOST_CELERY_VISIBILITY_TIMEOUT``, ``FUNBOOST_CELERY_HEARTBEAT_TIMEOUT``), then loopback defaults. Nothing is read from files.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from pydantic import Field, field_validator

from funboost.plugins.broker import BrokerOptions

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
ENV_BROKER_URL = "FUNBOOST_CELERY_BROKER_URL"
ENV_RESULT_BACKEND = "FUNBOOST_CELERY_RESULT_BACKEND"
ENV_VISIBILITY_TIMEOUT = "FUNBOOST_CELERY_VISIBILITY_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "FUNBOOST_CELERY_HEARTBEAT_TIMEOUT"
DEFAULT_VISIBILITY_TIMEOUT = 20.0
DEFAULT_HEARTBEAT_TIMEOUT = 6.0


class CeleryOptions(BrokerOptions):
    """Options of the ``celery`` broker kind.

    ``celery_conf`` takes any Celery setting (lower-case names, e.g. ``worker_prefetch_multiplier``);
    it is applied last, so it can override what this plugin sets. ``task_options`` are passed to the
    Celery task decorator of the queue (e.g. ``{"acks_late": False}``, ``{"rate_limit": "10/m"}``).
    ``worker_options`` are passed to Celery's ``WorkController`` (e.g. ``{"without_heartbeat": True}``).
    """

    broker_url: Optional[str] = None
    result_backend: Optional[str] = None
    celery_conf: dict[str, Any] = Field(default_factory=dict)
    task_options: dict[str, Any] = Field(default_factory=dict)
    worker_options: dict[str, Any] = Field(default_factory=dict)
    # Redis transport only (see funboost_celery.lease): each process holding unacked messages renews its
    # lease every fifth of heartbeat_timeout; its messages go back when its process is gone (same host:
    # within about a second) or its lease is this old (other hosts). Default DEFAULT_HEARTBEAT_TIMEOUT.
    heartbeat_timeout: Optional[float] = Field(default=None, gt=0)
    # Redis transport only: kombu's age-based restore, kept as a backstop for unacked messages without a
    # holder tag (written by a process that does not use this plugin's transport); a tagged message is
    # never restored by age. Default DEFAULT_VISIBILITY_TIMEOUT.
    visibility_timeout: Optional[float] = Field(default=None, gt=0)
    # Priorities 0..max_priority (higher runs first). On RabbitMQ this declares the queues with
    # x-max-priority, which must match an existing queue's declaration; None turns priorities off.
    max_priority: Optional[int] = 9

    @field_validator("max_priority")
    @classmethod
    def _prio(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and not 1 <= v <= 255:
            raise ValueError("max_priority must be between 1 and 255 (or None)")
        return v

    def resolved_broker_url(self) -> str:
        return self.broker_url or os.environ.get(ENV_BROKER_URL) or DEFAULT_BROKER_URL

    def resolved_result_backend(self) -> Optional[str]:
        return self.result_backend or os.environ.get(ENV_RESULT_BACKEND) or None

    def resolved_visibility_timeout(self) -> float:
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        env = os.environ.get(ENV_VISIBILITY_TIMEOUT)
        return float(env) if env else DEFAULT_VISIBILITY_TIMEOUT

    def resolved_heartbeat_timeout(self) -> float:
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        env = os.environ.get(ENV_HEARTBEAT_TIMEOUT)
        return float(env) if env else DEFAULT_HEARTBEAT_TIMEOUT
