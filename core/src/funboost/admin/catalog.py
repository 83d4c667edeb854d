"""The queue catalog: what a consumer records about its queue so that tools that cannot import the user's
code (the web manager, ``funboost status``) can still find the queue, build its broker and show its
settings.

A consumer writes its queue's record (:func:`queue_record`) to the state backend's document collection
:data:`CATALOG` when it starts and every :data:`REFRESH_INTERVAL` seconds. Broker options are recorded
without secrets (:func:`redact_options`): keys that name a secret are dropped, and a URL's password is
removed; the dropped keys are listed under ``redacted`` so that the reader knows to supply them itself
(e.g. from the plugin's environment variables, which the plugin reads when an option is not given).
"""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from funboost.params import BoosterParams
    from funboost.plugins.broker import Broker

from funboost.redact import SECRET_KEY as _SECRET_KEY, redact_url  # noqa: F401  (redact_url: part of this module's API)

CATALOG = "queues"
REFRESH_INTERVAL = 60.0

def redact_options(options: dict, _prefix: str = "") -> tuple[dict, list[str]]:
    """(options without secrets, the dotted keys that were dropped or had a password removed).

    A key naming a secret (password, token, secret, credentials, api key ...) is dropped; a URL with a
    password is dropped too (its form without the password is kept under ``<key>_redacted``, for display
    only: a reader must not connect with it); nested dicts are handled the same way."""
    out: dict = {}
    redacted: list[str] = []
    for k, v in options.items():
        name = f"{_prefix}{k}"
        if _SECRET_KEY.search(str(k)) and v not in (None, "", {}, []):
            redacted.append(name)
            continue
        if isinstance(v, dict):
            out[k], sub = redact_options(v, name + ".")
            redacted += sub
        elif isinstance(v, str) and ("://" in v or "=" in v):
            safe, had = redact_url(v)
            if had:
                redacted.append(name)
                out[f"{k}_redacted"] = safe
            else:
                out[k] = v
        elif isinstance(v, (list, tuple)):
            items = []
            for item in v:
                if isinstance(item, dict):
                    item, sub = redact_options(item, name + ".")
                    redacted += sub
                elif isinstance(item, str) and ("://" in item or "=" in item):
                    safe, had = redact_url(item)
                    if had:
                        redacted.append(name)
                        item = safe
                items.append(item)
            out[k] = items
        else:
            out[k] = v
    return out, redacted


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    return repr(v)


def queue_record(params: "BoosterParams", broker: "Broker", func_name: str = "",
                 arg_names: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> dict:
    """The catalog record of a queue: broker kind, non-secret broker options, the settings the manager
    shows, and the function's argument names (for the publish form)."""
    try:
        raw_opts = broker.options.model_dump(mode="json", exclude_none=True)
    except Exception:  # an options object that is not a pydantic model
        raw_opts = {}
    opts, redacted = redact_options(_jsonable(raw_opts))
    conf = params.function_result_status_persistence_conf
    return {
        "queue": params.queue_name,
        "broker_kind": broker.kind,
        "broker_options": opts,
        "redacted": redacted,
        "capabilities": {k: v for k, v in broker.capabilities.as_dict().items() if k != "notes"},
        "function": func_name,
        "arg_names": list(arg_names),
        "required_args": list(required),
        "qps": params.qps,
        "concurrent_mode": str(params.concurrent_mode),
        "concurrent_num": params.concurrent_num,
        "max_retry_times": params.max_retry_times,
        "is_using_rpc_mode": params.is_using_rpc_mode,
        "state_backend": params.state_backend or None,
        "status_table": (conf.table_name or params.queue_name) if conf.is_save_status else None,
        "status_ttl": conf.expire_seconds,
        "host": socket.gethostname(),
        "updated": time.time(),
    }


def read_catalog(state: Any) -> dict[str, dict]:
    """Every queue record of ``state``; empty when the backend stores no documents."""
    try:
        return state.doc_list(CATALOG)
    except NotImplementedError:
        return {}


def read_queue_record(state: Any, queue: str) -> Optional[dict]:
    try:
        return state.doc_get(CATALOG, queue)
    except NotImplementedError:
        return None
