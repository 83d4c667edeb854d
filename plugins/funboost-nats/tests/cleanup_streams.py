"""Delete every JetStream stream whose name starts with a prefix (after a contract run from outside):
``python cleanup_streams.py PREFIX [URL]``."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from conftest import URL, delete_streams  # noqa: E402

if __name__ == "__main__":
    prefix = sys.argv[1]
    if len(prefix) < 4:
        sys.exit("refusing a prefix shorter than 4 characters")
    print(f"deleted {delete_streams(sys.argv[2] if len(sys.argv) > 2 else URL, prefix)} streams starting with {prefix!r}")
