"""Where funboost keeps local files: a per-user data directory, never the cwd or a root-level path."""
from __future__ import annotations

import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional


def _platform_base() -> Optional[Path]:
    try:
        home: Optional[Path] = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (some containers)
        home = None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or (str(home / "AppData" / "Local") if home else None)
    elif sys.platform == "darwin":
        base = str(home / "Library" / "Application Support") if home else None
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = xdg if xdg and os.path.isabs(xdg) else (str(home / ".local" / "share") if home else None)
    if not base or base in ("/", "\\"):
        return None
    return Path(base)


def user_data_dir() -> Path:
    """``$FUNBOOST_DATA_DIR``, else the platform's per-user data directory + ``funboost``; without any
    home directory, a private per-user folder under the temp dir (still never the cwd or ``/``)."""
    override = os.environ.get("FUNBOOST_DATA_DIR")
    if override:
        path = Path(override).expanduser()
    else:
        base = _platform_base()
        if base is not None:
            path = base / "funboost"
        else:
            try:
                user = getpass.getuser()
            except Exception:
                user = str(os.getuid()) if hasattr(os, "getuid") else "user"
            path = Path(tempfile.gettempdir()) / f"funboost-{user}"
    path.mkdir(parents=True, exist_ok=True)
    return path
