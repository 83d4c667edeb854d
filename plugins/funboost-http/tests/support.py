"""Test helpers: free ports, raw HTTP requests and waiting on conditions. Consumer subprocesses for the
failover tests are core's (funboost.testing.failover)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

from funboost.testing import wait_until  # noqa: F401  (re-exported for the tests)
from funboost.testing.failover import free_port  # noqa: F401  (re-exported for the tests)



def raw_request(url: str, method: str = "GET", body: Optional[bytes] = None,
                headers: Optional[dict] = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request with the standard library (no funboost code): ``(status, parsed JSON body)``."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        data = err.read()
        return err.code, json.loads(data) if data else None
