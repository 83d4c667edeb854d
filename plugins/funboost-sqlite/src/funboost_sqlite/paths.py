"""Where the queue databases live.

Precedence (first match wins):

1. option ``db_path``  - one database file shared by every queue (a ``queue`` column separates them)
2. option ``db_dir``   - a directory with one database file per queue
3. env ``FUNBOOST_SQLITE_PATH`` - like ``db_path``
4. env ``FUNBOOST_SQLITE_DIR``  - like ``db_dir``
5. the per-user data directory + ``queues``: ``$FUNBOOST_DATA_DIR`` if set, else
   ``$XDG_DATA_HOME/funboost`` (``~/.local/share/funboost``) on Linux, ``%LOCALAPPDATA%\\funboost`` on
   Windows, ``~/Library/Application Support/funboost`` on macOS. Never the current working directory,
   never a root-level path.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional

ENV_DIR = "FUNBOOST_SQLITE_DIR"
ENV_PATH = "FUNBOOST_SQLITE_PATH"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


def user_data_dir() -> Path:
    """The per-user data directory of funboost (core's rule, which honours ``FUNBOOST_DATA_DIR``)."""
    from funboost.paths import user_data_dir as core_user_data_dir
    return Path(core_user_data_dir())


def queue_file_name(queue_name: str) -> str:
    """A file name for a queue. Names that are not plain get a hash suffix, so two different queue names
    never share a file name by accident (and even if they did, rows carry their queue name)."""
    if _SAFE_NAME.match(queue_name) and not queue_name.endswith("."):
        return f"{queue_name}.sqlite3"
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", queue_name)[:80].strip(".") or "queue"
    digest = hashlib.sha1(queue_name.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}-{digest}.sqlite3"


def resolve_db_file(queue_name: str, db_path: Optional[str] = None, db_dir: Optional[str] = None) -> str:
    """Absolute path of the database file that holds ``queue_name``."""
    if db_path:
        return os.path.abspath(os.path.expanduser(db_path))
    if db_dir:
        return os.path.abspath(os.path.join(os.path.expanduser(db_dir), queue_file_name(queue_name)))
    env_path = os.environ.get(ENV_PATH)
    if env_path:
        return os.path.abspath(os.path.expanduser(env_path))
    env_dir = os.environ.get(ENV_DIR)
    base = os.path.expanduser(env_dir) if env_dir else str(user_data_dir() / "queues")
    return os.path.abspath(os.path.join(base, queue_file_name(queue_name)))
