"""Stream and subject names for a funboost queue name."""
from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_token(queue_name: str) -> str:
    """A NATS stream name / subject token for ``queue_name``: letters, digits, ``_`` and ``-`` only.
    Names that had to change get a short hash, so ``a.b`` and ``a_b`` never share a stream."""
    clean = _UNSAFE.sub("_", queue_name)
    if clean != queue_name:
        clean = f"{clean}_{hashlib.sha1(queue_name.encode()).hexdigest()[:8]}"
    return clean
