"""Helpers for plugin test suites that talk to the machine's shared servers."""
from __future__ import annotations

import shutil
import subprocess
from typing import Optional

__all__ = ["rabbitmq_test_vhost"]


def rabbitmq_test_vhost(vhost: str, user: str = "guest", password: str = "guest", host: str = "127.0.0.1",
                        port: int = 5672) -> Optional[str]:
    """Create ``vhost`` on the local RabbitMQ (idempotent) and give ``user`` full access to it, so that a
    test suite's queues and exchanges live apart from everything else on the shared server. Returns the
    ``amqp://`` URL of the vhost, or None when ``rabbitmqctl`` is missing or not permitted (the caller then
    falls back to the default vhost with unique names)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return None
    try:
        subprocess.run([ctl, "-q", "add_vhost", vhost], capture_output=True, timeout=60)  # exists already: fine
        r = subprocess.run([ctl, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
                           capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}" if r.returncode == 0 else None
