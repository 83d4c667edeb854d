"""Figures from a run: each test appends one JSON line to ``$FUNBOOST_RELIABILITY_REPORT`` (when set) and
prints it, so that scripts/reliability.sh can build the tables of docs/reliability.md from real runs."""
from __future__ import annotations

import json
import os
from typing import Any

from .sizes import SIZE


def record(fault: str, **figures: Any) -> None:
    line = {"fault": fault, "size": SIZE.name, **figures}
    print("\nRELIABILITY " + json.dumps(line, sort_keys=True))
    path = os.environ.get("FUNBOOST_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
