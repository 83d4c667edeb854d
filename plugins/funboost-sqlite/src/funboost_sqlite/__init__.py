"""funboost-sqlite: the SQLITE_QUEUE broker (durable, multi-process, at-least-once; stdlib sqlite3)."""
from funboost_sqlite.broker import QueueStorageFull, SqliteBroker, SqliteOptions
from funboost_sqlite.paths import ENV_DIR, ENV_PATH, resolve_db_file, user_data_dir

__all__ = ["SqliteBroker", "SqliteOptions", "QueueStorageFull", "ENV_DIR", "ENV_PATH", "resolve_db_file", "user_data_dir"]
__version__ = "0.1.0"
