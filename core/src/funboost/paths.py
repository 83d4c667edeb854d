"""Where funboost keeps local files: a per-user data directory, never the cwd or a root-level path."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """``$FUNBOOST_DATA_DIR``, else the platform's per-user data directory + ``funboost``."""
    override = os.environ.get("FUNBOOST_DATA_DIR")
    if override:
        base = Path(override).expanduser()
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "funboost"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "funboost"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "share") / "funboost"
    base.mkdir(parents=True, exist_ok=True)
    return base
