"""funboost-postgres: the POSTGRES broker (psycopg 3; SKIP LOCKED fetch, LISTEN/NOTIFY, liveness reclaim)."""
from funboost_postgres.broker import DEFAULT_DSN, ENV_DSN, ENV_SCHEMA, PostgresBroker, PostgresOptions, channel_name

__all__ = ["PostgresBroker", "PostgresOptions", "ENV_DSN", "ENV_SCHEMA", "DEFAULT_DSN", "channel_name"]
__version__ = "0.1.0"
