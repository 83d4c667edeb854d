"""funboost-sqlalchemy: the SQLALCHEMY broker (alias SQLACHEMY) on any database SQLAlchemy 2 speaks."""
from funboost_sqlalchemy.broker import ENV_PREFIX, ENV_URL, SqlAlchemyBroker, SqlAlchemyOptions, default_url

__all__ = ["SqlAlchemyBroker", "SqlAlchemyOptions", "ENV_URL", "ENV_PREFIX", "default_url"]
__version__ = "0.1.0"
