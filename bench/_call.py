"""Run one measurement function of a bench script in this (fresh) process and report what it measured.

    python bench/_call.py MODULE FUNCTION '[json args]'

Used by ``run_all.py`` so that every bench script's own measuring code is reused as it is, whatever way
the script reports: a function that returns a dict is reported as ``BENCHRESULT {...}`` (with this
process's peak RSS added); a function that prints its own result lines (``RESULT``, ``FIGURES``,
``BENCHRESULT``) is left to print them. The process leaves with ``os._exit`` because consumer threads are
not daemons everywhere. Only the standard library is imported here: the same runner serves the original
funboost 55.0's virtualenv.
"""
from __future__ import annotations

import importlib
import json
import os
import sys


def main() -> None:
    module, func, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from _common import emit, peak_rss_mb  # noqa: E402 (bench/ on sys.path first)
    fn = getattr(importlib.import_module(module), func)
    out = fn(*args)
    if isinstance(out, dict):
        emit(out)
    else:  # the function printed its own lines; add this process's peak RSS for them
        os.write(1, ("\nCALLRSS " + json.dumps({"rss_mb": round(peak_rss_mb(), 1)}) + "\n").encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
