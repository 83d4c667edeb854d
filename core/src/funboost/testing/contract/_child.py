"""Child processes of the contract suite (crash, cross-process and persistence tests)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

_PRELUDE = """
import json, os, signal, sys, time
from funboost.testing.requirements import load_broker_class
cls = load_broker_class({kind!r})
b = cls({queue!r}, cls.parse_options(json.loads({opts!r})))
"""


def run_child(kind: str, queue_name: str, options: dict[str, Any], body: str, timeout: float = 120,
              serve: bool = False) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter where ``b`` is a broker of ``kind`` for ``queue_name``."""
    script = _PRELUDE.format(kind=kind, queue=queue_name, opts=json.dumps(options))
    if serve:
        script += "b.serve()\n"
    script += textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
