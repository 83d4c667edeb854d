"""The audit log of administrative actions (who, when, what, on which queue, how many), kept in the
state backend's document collection :data:`AUDIT` for :data:`AUDIT_TTL` seconds."""
from __future__ import annotations

import time
import uuid
from typing import Any, Optional

AUDIT = "audit"
AUDIT_TTL = 365 * 86400.0


def audit_log(state: Any, who: str, action: str, target: str, count: Optional[int] = None,
              detail: Optional[dict] = None) -> dict:
    """Append an entry; returns it. Keys sort by time, so :func:`read_audit` lists newest first."""
    now = time.time()
    entry = {"time": now, "who": who, "action": action, "target": target, "count": count, "detail": detail or {}}
    state.doc_put(AUDIT, f"{now:017.6f}-{uuid.uuid4().hex[:8]}", entry, AUDIT_TTL)
    return entry


def read_audit(state: Any, limit: int = 200, action: Optional[str] = None) -> list[dict]:
    """The newest ``limit`` entries (of ``action`` when given), newest first."""
    try:
        docs = state.doc_list(AUDIT)
    except NotImplementedError:
        return []
    out = []
    for key in sorted(docs, reverse=True):
        e = docs[key]
        if action is None or e.get("action") == action:
            out.append(e)
            if len(out) >= limit:
                break
    return out
